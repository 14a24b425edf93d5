"""Gradio's picture cache, made safe for many sessions: every cache file is written once, whole, under
its final name by an atomic rename.

Gradio (``gradio.processing_utils.save_pil_to_cache`` / ``save_bytes_to_cache``) names a cached
picture by its content hash and writes it with a plain ``write_bytes``: two sessions showing the same
picture rewrite one file while a third request streams it, and that response ends short or long
(h11 ``Too little data for declared Content-Length``). :func:`install` replaces both functions with
versions that skip a file that is already complete and otherwise write a temporary file beside it
and ``os.replace`` it into place, so a reader sees the old whole file or the new whole file.
The annotation canvas does not use the cache at all (its pictures are served from memory).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)
_installed = False


def write_once(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` unless a file of that size is already there (the name is the content
    hash); never in place: a temporary file in the same folder is renamed over it."""
    try:
        if path.stat().st_size == len(data):
            return
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def install() -> None:
    """Swap Gradio's two cache writers for :func:`write_once`-based ones (idempotent)."""
    global _installed
    if _installed:
        return
    from gradio import processing_utils as pu

    def save_pil_to_cache(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
        data = pu.encode_pil_to_bytes(img, format)
        folder = Path(cache_dir) / pu.hash_bytes(data)
        folder.mkdir(exist_ok=True, parents=True)
        path = (folder / f"{name}.{format}").resolve()
        write_once(path, data)
        return str(path)

    def save_bytes_to_cache(data: bytes, file_name: str, cache_dir: str) -> str:
        folder = Path(cache_dir) / pu.hash_bytes(data)
        folder.mkdir(exist_ok=True, parents=True)
        if not Path(file_name).suffix:
            file_name = file_name + pu.detect_audio_format(data)
        path = (folder / Path(file_name).name).resolve()
        write_once(path, data)
        return str(path)

    pu.save_pil_to_cache = save_pil_to_cache
    pu.save_bytes_to_cache = save_bytes_to_cache
    _installed = True
    log.debug("gradio's cache writers replaced by write-once atomic ones")
