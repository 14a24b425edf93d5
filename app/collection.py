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

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from deris_core.preprocess import ImageError, load_image

from .store import Store, StoreError

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


def _files(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            if Path(f).suffix.lower() in IMAGE_SUFFIXES and not f.startswith("."):
                out.append(Path(dirpath) / f)
    return out


def import_images(store: Store, folder: str | Path, split: str = "", max_side: int = 4096,
                  progress: bool = True) -> FolderImport:
    """Add every image under ``folder`` to the collection (see the module docstring)."""
    root = Path(folder)
    if not root.is_dir():
        raise StoreError(f"not a folder: {root.name or folder}")
    root = root.resolve()
    known_paths = {r[0] for r in store.read("SELECT path FROM images WHERE path IS NOT NULL")}
    res = FolderImport()
    files = _files(root)
    for path in tqdm(files, desc="importing images", unit="img", disable=not progress):
        rel = path.relative_to(root).as_posix()
        real = path.resolve()
        if not real.is_relative_to(root):
            res.skipped.append((rel, "a link that leaves the folder"))
            continue
        if str(real) in known_paths:
            res.known += 1
            continue
        try:
            rgb = load_image(real)
        except ImageError as exc:
            res.skipped.append((rel, str(exc).replace(str(real), rel)))
            continue
        h, w = rgb.shape[:2]
        where: Path | None = real
        if max(h, w) > max_side:
            s = max_side / max(h, w)
            rgb = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
            where = None  # changed pixels: the store keeps its own copy
        before = store.read("SELECT COUNT(*) FROM images")[0][0]
        store.add_image(rgb, file_name=rel, split=split, path=where)
        if store.read("SELECT COUNT(*) FROM images")[0][0] > before:
            res.added += 1
        else:
            res.known += 1
    return res


def thumbnail_file(store: Store, image_id: int, side: int = THUMB_SIDE) -> Path | None:
    """A cached JPEG thumbnail of a store image (made on first use); None when the pixels are unknown."""
    folder = store.media_dir / "thumbs"
    path = folder / f"{image_id}_{side}.jpg"
    if path.is_file():
        return path
    rgb = store.load_image(image_id)
    if rgb is None:
        return None
    h, w = rgb.shape[:2]
    s = min(1.0, side / max(h, w))
    small = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA) if s < 1 else rgb
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{image_id}_{side}.{os.getpid()}.tmp.jpg"
        if cv2.imwrite(str(tmp), cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2BGR)):
            os.replace(tmp, path)
            return path
    except OSError:
        pass
    return None
