"""Gradio's picture cache under concurrent sessions (app/viewkit/cache_files.py): a picture that many sessions
show at once is never rewritten in place, so every reader gets the whole file."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from PIL import Image

from app.viewkit.cache_files import install, write_once


def _hammer(save, cache: Path, img: Image.Image, seconds: float = 1.5) -> list[str]:
    """Writers save the same picture again and again while readers read it: what the readers saw wrong."""
    first = Path(save(img, str(cache), format="png"))
    whole = first.read_bytes()
    bad: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            save(img, str(cache), format="png")

    def reader() -> None:
        while not stop.is_set():
            got = first.read_bytes()
            if got != whole:
                bad.append(f"{len(got)} of {len(whole)} bytes")

    threads = [threading.Thread(target=writer) for _ in range(6)] + [threading.Thread(target=reader) for _ in range(6)]
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join()
    return bad


def test_twelve_sessions_saving_and_reading_one_cached_picture_see_it_whole(tmp_path: Path) -> None:
    from gradio import processing_utils as pu

    install()
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (400, 600, 3), dtype=np.uint8))
    assert _hammer(pu.save_pil_to_cache, tmp_path, img) == []
    path = Path(pu.save_bytes_to_cache(b"abc" * 1000, "x.bin", str(tmp_path)))
    assert path.read_bytes() == b"abc" * 1000 and not list(path.parent.glob(".part-*"))


def test_write_once_skips_a_complete_file_and_replaces_a_short_one(tmp_path: Path) -> None:
    p = tmp_path / "a.png"
    write_once(p, b"12345")
    before = p.stat().st_ino
    write_once(p, b"12345")
    assert p.stat().st_ino == before  # not rewritten
    p.write_bytes(b"12")  # a file cut short (a crash)
    write_once(p, b"12345")
    assert p.read_bytes() == b"12345" and p.stat().st_ino != before
