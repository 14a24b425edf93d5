"""Hugging Face Hub access with one-line errors and bounded waits.

Every download goes through ``huggingface_hub`` (its cache, ``HF_ENDPOINT``, ``HF_TOKEN``,
``HF_HUB_OFFLINE``); what fails is reported as one :class:`HubError` line that names the file,
the repository and the reason, never a traceback or a local path. ``HF_HUB_ETAG_TIMEOUT`` and
``HF_HUB_DOWNLOAD_TIMEOUT`` bound how long an unresponsive server is waited for.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import urllib.request
from pathlib import Path

from . import env
from .errors import DerisError

log = logging.getLogger(__name__)

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class HubError(DerisError, FileNotFoundError):
    """A file that could not be fetched from the Hub (or a URL), with the reason."""


def offline() -> bool:
    """``HF_HUB_OFFLINE`` as set now (``huggingface_hub`` reads it once, at import)."""
    return env.flag("HF_HUB_OFFLINE")


def looks_like_repo_id(text: str) -> bool:
    """``owner/name`` that is not a local file name (no weights suffix)."""
    return bool(REPO_ID.match(text)) and not text.endswith((".pth", ".pt", ".safetensors", ".bin"))


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and exc not in out and len(out) < 8:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return out


def _reason(exc: BaseException) -> str:
    """The first line of an exception, shortened, without local paths."""
    for inner in _chain(exc):  # a timeout or a cut body hidden behind "not in the cache"
        low = (type(inner).__name__ + " " + str(inner)).lower()
        if "timeout" in low or "timed out" in low:
            return "the server did not answer in time (HF_HUB_ETAG_TIMEOUT / HF_HUB_DOWNLOAD_TIMEOUT)"
        if "incomplete" in low or "peer closed" in low or "consistency check" in low:
            return "the download was cut short (incomplete file); try again"
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if name in ("RepositoryNotFoundError",):
        return "the repository does not exist or is private (HTTP 404)"
    if name in ("EntryNotFoundError", "RemoteEntryNotFoundError"):
        return "the repository has no such file (HTTP 404)"
    if name in ("RevisionNotFoundError",):
        return "the revision does not exist"
    if name in ("LocalEntryNotFoundError", "OfflineModeIsEnabled"):
        if offline():
            return "not in the local cache, and HF_HUB_OFFLINE is set"
        return "not in the local cache and the Hub is not reachable (offline or no network)"
    text = re.sub(r"(?<![:/\w.])/[^\s'\"]+", "<path>", text)  # local paths, not URLs
    return f"{name}: {text[:200]}" if text else name


def _etag_timeout() -> float:
    from huggingface_hub import constants

    return float(env.filled("HF_HUB_ETAG_TIMEOUT") or constants.HF_HUB_ETAG_TIMEOUT)


def _unreachable(exc: BaseException) -> bool:
    """A network failure (timeout, refused, reset), as opposed to an answer of the server (404 ...)."""
    transport = ("TransportError", "TimeoutException", "NetworkError", "ConnectError", "RemoteProtocolError")
    for e in _chain(exc):
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status is not None:
            return status >= 500 or status == 429  # a server in trouble counts as unreachable; 4xx is an answer
        if any(c.__name__ in transport for c in type(e).__mro__) or isinstance(e, (ConnectionError, TimeoutError)):
            return True
    return False


def _probe(call, fallback, what: str):
    """Ask the Hub once with a short timeout and no retries before downloading.

    ``huggingface_hub`` retries an unanswered request for minutes when the file is not cached;
    a probe that gets no answer uses the cache (``fallback``) or fails at once."""
    try:
        call()
    except HubError:
        raise
    except Exception as exc:  # noqa: BLE001 - huggingface_hub and urllib raise many types (HTTP, network, auth); one HubError line
        log.debug("%s: the probe failed", what, exc_info=True)
        if not _unreachable(exc):
            raise HubError(f"{what}: {_reason(exc)}") from None
        try:
            return fallback()
        except Exception:  # noqa: BLE001 - not cached: the probe's reason is the useful one
            raise HubError(f"{what}: {_reason(exc)}") from None
    return None


def download(repo_id: str, filename: str, *, repo_type: str = "model", revision: str | None = None,
             max_bytes: int | None = None) -> Path:
    """One file from the Hub (or the local cache), or :class:`HubError`; ``max_bytes`` refuses a larger
    file from the size the Hub announces, before anything is downloaded."""
    try:
        from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    except ImportError:  # pragma: no cover
        raise HubError("huggingface_hub is not installed: pip install huggingface_hub") from None
    what = f"could not get '{filename}' from the Hugging Face repository '{repo_id}'"

    def fetch(local_only: bool) -> Path:
        return Path(hf_hub_download(repo_id, filename, repo_type=repo_type, revision=revision,
                                    local_files_only=local_only))

    try:
        if not offline():
            url = hf_hub_url(repo_id, filename, repo_type=repo_type, revision=revision)

            def probe() -> None:
                size = getattr(get_hf_file_metadata(url, timeout=_etag_timeout()), "size", None)
                if max_bytes is not None and size is not None and size > max_bytes:
                    raise HubError(f"{what}: it is {size} bytes, more than the {max_bytes} bytes allowed")

            cached = _probe(probe, lambda: fetch(True), what)
            if cached is not None:
                return cached
        return fetch(offline())
    except HubError:
        raise
    except Exception as exc:  # noqa: BLE001 - huggingface_hub and urllib raise many types (HTTP, network, auth); one HubError line
        log.debug("%s", what, exc_info=True)
        raise HubError(f"{what}: {_reason(exc)}") from None


def snapshot(repo_id: str, patterns: list[str], *, revision: str | None = None) -> Path:
    """The files of a repository that match ``patterns``, downloaded into the cache."""
    try:
        from huggingface_hub import HfApi, snapshot_download
    except ImportError:  # pragma: no cover
        raise HubError("huggingface_hub is not installed: pip install huggingface_hub") from None
    what = f"could not get the Hugging Face repository '{repo_id}'"

    def fetch(local_only: bool) -> Path:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, revision=revision, local_files_only=local_only))

    try:
        if not offline():
            probe = lambda: HfApi().model_info(repo_id, revision=revision, timeout=_etag_timeout())  # noqa: E731
            cached = _probe(probe, lambda: fetch(True), what)
            if cached is not None:
                return cached
        return fetch(offline())
    except HubError:
        raise
    except Exception as exc:  # noqa: BLE001 - huggingface_hub and urllib raise many types (HTTP, network, auth); one HubError line
        log.debug("%s", what, exc_info=True)
        raise HubError(f"{what}: {_reason(exc)}") from None


def cached_file(repo_id: str, filename: str) -> Path | None:
    """The cached copy of a Hub file, without any network access."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    found = try_to_load_from_cache(repo_id, filename)
    return Path(found) if isinstance(found, str) else None


def download_url(url: str, dest: Path, timeout: float | None = None, *, max_bytes: int | None = None,
                 deadline_s: float | None = None) -> Path:
    """Fetch ``url`` once into ``dest`` (atomic); an existing ``dest`` is reused.

    ``timeout`` bounds each wait for the server; ``deadline_s`` bounds the whole download (a server
    that trickles a byte a second is given up on when it passes); ``max_bytes`` refuses a larger file
    from its announced length, and while streaming, before more than ``max_bytes`` are written."""
    if dest.is_file():
        return dest
    if offline():
        raise HubError(f"could not get {url}: HF_HUB_OFFLINE is set and it is not cached yet")
    timeout = timeout or float(env.filled("HF_HUB_DOWNLOAD_TIMEOUT"))
    end = time.monotonic() + deadline_s if deadline_s else None
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + f".{os.getpid()}.{threading.get_ident()}.part")

    def left() -> float:
        if end is None:
            return timeout
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise HubError(f"could not get {url}: the download took longer than the {deadline_s:.0f} s allowed")
        return min(timeout, remaining)

    try:
        with urllib.request.urlopen(url, timeout=left()) as resp:  # noqa: S310 - a fixed https URL
            expected = resp.headers.get("Content-Length")
            if max_bytes is not None and expected is not None and expected.isdigit() and int(expected) > max_bytes:
                raise HubError(f"could not get {url}: it is {int(expected)} bytes, more than the {max_bytes} bytes allowed")
            got = 0
            with open(tmp, "wb") as fh:
                while True:
                    _set_timeout(resp, left())
                    chunk = resp.read1(1 << 16)
                    if not chunk:
                        break
                    got += len(chunk)
                    if max_bytes is not None and got > max_bytes:
                        raise HubError(f"could not get {url}: it is more than the {max_bytes} bytes allowed")
                    fh.write(chunk)
                    left()
        if expected is not None and tmp.stat().st_size != int(expected):
            raise HubError(f"could not get {url}: the download was cut short ({tmp.stat().st_size} of {expected} bytes)")
        os.replace(tmp, dest)
    except HubError:
        raise
    except Exception as exc:  # noqa: BLE001 - urllib raises many types (HTTP, socket, SSL); one HubError line
        log.debug("downloading %s failed", url, exc_info=True)
        if end is not None and time.monotonic() >= end - 0.05:  # the socket wait was cut to the deadline
            raise HubError(f"could not get {url}: the download took longer than the {deadline_s:.0f} s allowed") from None
        raise HubError(f"could not get {url}: {_reason(exc)}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _set_timeout(resp, seconds: float) -> None:
    """Shorten the socket timeout of an open response to what is left of the deadline."""
    sock = getattr(getattr(getattr(resp, "fp", None), "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(max(0.01, seconds))
