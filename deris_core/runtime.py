"""Process settings: the command lines' logging (:func:`configure_logging`), and opt-in settings for
memory-constrained CPU inference (the app, the CLIs, the benchmark).

glibc's allocator raises its mmap threshold every time a large block is freed, so after the
first few forward passes the multi-megabyte activation buffers come from the heap instead of
fresh mappings; freed heap memory is rarely returned and the resident set creeps upward with
each request (about +180 MiB over four DeRIS-B requests here). Pinning the thresholds keeps
every large buffer in its own mapping, returned to the system when it is freed, but every
such buffer then costs fresh page faults: the DeRIS-B image encoder went from 0.84 s to
1.52 s. Hence opt-in: ``DERIS_PIN_MALLOC=1`` (see docs/performance.md).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import logging
import sys

from . import env

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def limit_heap_growth(mmap_threshold: int = 256 * 1024, trim_threshold: int = 1 << 20) -> bool:
    """Pin glibc's mmap/trim thresholds (fixed values disable the dynamic adjustment).

    Returns True when applied; a no-op (False) on other C libraries and platforms.
    """
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and friends have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    _done = ok
    return ok


def configure_from_env() -> bool:
    """Apply :func:`limit_heap_growth` when ``DERIS_PIN_MALLOC=1``; returns whether it was applied."""
    return limit_heap_growth() if env.get("DERIS_PIN_MALLOC") == "1" else False


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def add_log_level(parser: argparse.ArgumentParser) -> None:
    """``--log-level LEVEL`` and ``-v`` (DEBUG) on a command line; :func:`configure_logging` reads them."""
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default=None,
                        help="what the log shows (default: $DERIS_LOG_LEVEL, else INFO; DEBUG lists every save)")
    parser.add_argument("-v", "--verbose", dest="log_level", action="store_const", const="DEBUG",
                        help="the same as --log-level DEBUG")


def configure_logging(level: str | None = None, default: str = "INFO", fmt: str = "%(levelname)s %(name)s: %(message)s",
                      stream=None) -> str:
    """Configure the root logger once per process, at ``level`` (``--log-level``), else ``DERIS_LOG_LEVEL``,
    else ``default``; returns the level used (an unknown ``DERIS_LOG_LEVEL`` is logged and ignored)."""
    chosen = (level or env.filled("DERIS_LOG_LEVEL") or default).strip().upper()
    known = chosen in LOG_LEVELS
    logging.basicConfig(level=getattr(logging, chosen if known else default), format=fmt, stream=stream)
    if not known:
        logging.getLogger(__name__).warning("DERIS_LOG_LEVEL=%r is not one of %s; using %s", chosen, ", ".join(LOG_LEVELS), default)
    return chosen if known else default
