"""Image collections: import a folder (recursive, by content hash) and cached thumbnails.

    python -m app.dataset import-images DIR --db DB [--split S]

Each readable image becomes one store image, identified by its decoded pixels: importing the
folder again adds only new pictures, and the same picture under two names is stored once.
Images are read where they are (the folder must stay), except those larger than
``max_side``, which are scaled down and copied into the store's media folder. Unreadable
files are listed with the reason and skipped. Nothing outside the folder is read (links that
leave it are skipped).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from deris_core.preprocess import ImageError, load_image

from ..store import Store, StoreError
from ..store.names import display_name, not_utf8

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
THUMB_SIDE = 160


@dataclass
class FolderImport:
    added: int = 0
    known: int = 0  # already in the store (same file, or the same pixels)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative name, reason)

    def summary(self) -> dict:
        return {"added": self.added, "already_known": self.known, "skipped": len(self.skipped),
                "skipped_files": [f"{n}: {why}" for n, why in self.skipped]}


def _files(root: Path, skip: set[Path] = frozenset()) -> list[Path]:
    """Image files under ``root`` (sorted, hidden ones left out), never entering the folders in ``skip``."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if (Path(dirpath) / d).resolve() not in skip)
        for f in sorted(filenames):
            if Path(f).suffix.lower() in IMAGE_SUFFIXES and not f.startswith("."):
                out.append(Path(dirpath) / f)
    return out


def studio_folders(store: Store) -> set[Path]:
    """The folders the studio writes itself (media copies, thumbnails, exports): never imported as pictures."""
    return {store.media_dir.resolve(), store.exports_dir.resolve()}


def import_images(store: Store, folder: str | Path, split: str = "", max_side: int = 4096,
                  progress: bool = True) -> FolderImport:
    """Add every image under ``folder`` to the collection (see the module docstring).

    A file whose name is not valid UTF-8 is imported under its name with the bad bytes escaped
    (``\\xNN``), from a copy in the media folder (its path cannot be stored as text); one file that
    cannot be read is listed and skipped, never stopping the others. The studio's own media and
    export folders are never imported."""
    root = Path(folder)
    if not root.is_dir():
        raise StoreError(f"not a folder: {display_name(root.name or str(folder))}")
    root = root.resolve()
    if any(root == f or root.is_relative_to(f) for f in studio_folders(store)):
        raise StoreError("that folder is the studio's own media or export folder; its pictures are already stored")
    known_paths = store.image_paths()
    res = FolderImport()
    files = _files(root, studio_folders(store))
    for path in tqdm(files, desc="importing images", unit="img", disable=not progress):
        rel = path.relative_to(root).as_posix()
        shown = display_name(rel)
        try:
            real = path.resolve()
            if not real.is_relative_to(root):
                res.skipped.append((shown, "a link that leaves the folder"))
                continue
            if str(real) in known_paths:
                res.known += 1
                continue
            rgb = load_image(real)
        except ImageError as exc:
            res.skipped.append((shown, display_name(str(exc).replace(str(real), rel))))
            continue
        except (OSError, RuntimeError) as exc:  # a name the file system refuses, a link loop ...
            res.skipped.append((shown, f"cannot be read ({type(exc).__name__})"))
            continue
        h, w = rgb.shape[:2]
        where: Path | None = None if not_utf8(str(real)) else real  # a path that is not text: the store keeps a copy
        if max(h, w) > max_side:
            s = max_side / max(h, w)
            rgb = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
            where = None  # changed pixels: the store keeps its own copy
        before = store.image_count()
        try:
            store.add_image(rgb, file_name=shown, split=split, path=where)
        except StoreError as exc:
            res.skipped.append((shown, str(exc)))
            continue
        if store.image_count() > before:
            res.added += 1
        else:
            res.known += 1
    log.info("images from %s: %d added, %d already there, %d skipped", display_name(str(folder)), res.added, res.known,
             len(res.skipped))
    for name, why in res.skipped:
        log.info("skipped %s: %s", name, why)
    return res


def thumbnail_key(store: Store, image_id: int) -> str | None:
    """What a thumbnail is made from: the image's content hash (or, for images imported without one, its
    source file's path, size and modification time) and size, so a thumbnail cached for another database
    at the same path, or for a file replaced since, is never shown. None when the pixels are unknown."""
    rec = store.image(image_id)
    if store.location.is_postgres:  # the bytes in the database, named by their hash
        digest = store.media_digest(image_id)
        return None if digest is None else hashlib.sha256(
            f"pg|{digest}|{rec.width}x{rec.height}".encode()).hexdigest()[:32]
    if not rec.path:
        return None
    try:
        st = Path(rec.path).stat()
    except OSError:
        return None
    ident = f"{rec.sha256 or ''}|{rec.path}|{st.st_size}|{st.st_mtime_ns}|{rec.width}x{rec.height}"
    return hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()[:32]


_LEGACY_THUMB = re.compile(r"\d+_\d+\.jpg")
_legacy_checked: set[str] = set()


def _drop_legacy_thumbnails(folder: Path) -> None:
    """Remove thumbnails named by image id only (``<id>_<side>.jpg``, before content keys): they may show
    another database's pictures. Once per folder and process."""
    if str(folder) in _legacy_checked:
        return
    _legacy_checked.add(str(folder))
    try:
        for p in folder.iterdir():
            if _LEGACY_THUMB.fullmatch(p.name):
                p.unlink(missing_ok=True)
    except OSError:
        pass


def thumbnail_file(store: Store, image_id: int, side: int = THUMB_SIDE) -> Path | None:
    """A cached JPEG thumbnail of a store image (made on first use, keyed by :func:`thumbnail_key`);
    None when the pixels are unknown."""
    key = thumbnail_key(store, image_id)
    if key is None:
        return None
    folder = store.media_dir / "thumbs"
    path = folder / f"{key}_{side}.jpg"
    if path.is_file():
        return path
    _drop_legacy_thumbnails(folder)
    rgb = store.load_image(image_id)
    if rgb is None:
        return None
    h, w = rgb.shape[:2]
    s = min(1.0, side / max(h, w))
    small = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA) if s < 1 else rgb
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}_{side}.{os.getpid()}.{threading.get_ident()}.tmp.jpg"
        if cv2.imwrite(str(tmp), cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2BGR)):
            os.replace(tmp, path)
            return path
    except OSError:
        pass
    return None
