"""Adding images from the app: uploaded files (anyone signed in) and a folder of the server
(operators, only under a folder the operator named at launch with ``--import-root``).

Both run the command line's import (:func:`app.dataset.collection.import_images` for a folder; the
store's content hash for uploads), so they are idempotent as ``import-images`` is: the same
pixels give the same image, and importing twice adds nothing the second time.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from deris_core.preprocess import ImageError, load_image

from ..dataset.collection import IMAGE_SUFFIXES, FolderImport, import_images
from ..store import Store, StoreError
from ..store.counts import image_count
from ..store.names import display_name
from .errors import BadInput
from .permissions import Actor, require_studio

log = logging.getLogger(__name__)
MAX_UPLOADS = 500  # per batch: a team adds more in several goes, the server stays responsive


@dataclass
class Added:
    added: int = 0
    known: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def line(self) -> str:
        """One sentence for the status line."""
        text = f"Added {self.added} image{'s' if self.added != 1 else ''}"
        if self.known:
            text += f"; {self.known} already in the collection"
        if self.skipped:
            text += f"; skipped {len(self.skipped)}: " + "; ".join(f"{n} ({why})" for n, why in self.skipped[:5])
        return text + "."


def name_problem(text: str) -> str | None:
    """Why a typed folder name is refused before it touches the file system (None: it may be tried)."""
    if not text or not text.strip():
        return "type a folder of the server"
    if len(text) > 4096:
        return "the folder name is too long"
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in text):
        return "the folder name holds control characters"
    return None


def confined(folder: str, roots: Sequence[Path]) -> Path:
    """``folder`` (absolute, or relative to the first root) resolved, when it lies inside one of the
    operator's ``roots`` (links followed, ``..`` resolved); BadInput otherwise, naming no path
    outside the roots."""
    if not roots:
        raise BadInput("importing a folder of the server is off: the operator starts the studio with "
                       "--import-root DIR to allow folders under DIR")
    why = name_problem(folder)
    if why:
        raise BadInput(why)
    raw = Path(folder.strip())
    base = [Path(r).resolve() for r in roots]
    try:
        real = (raw if raw.is_absolute() else base[0] / raw).resolve(strict=True)
    except (OSError, RuntimeError):
        raise BadInput(f"no such folder under the allowed import folders: {display_name(folder.strip())[:200]}") from None
    if not any(real == b or real.is_relative_to(b) for b in base):
        raise BadInput("that folder is outside the folders the operator allowed (--import-root)")
    if not real.is_dir():
        raise BadInput(f"not a folder: {display_name(raw.name)}")
    return real


def add_uploads(store: Store, actor: Actor, files: Sequence[tuple[str | Path, str]], split: str = "",
                on_progress: Callable[[int, int], None] | None = None) -> Added:
    """Add uploaded images: ``(temporary path, the name the person gave)`` each; one unreadable file
    is listed and skipped, never stopping the others. ``on_progress(done, total)`` after each file."""
    require_studio(actor, "add_images")
    if len(files) > MAX_UPLOADS:
        raise BadInput(f"at most {MAX_UPLOADS} files at once; add the rest in another go")
    res = Added()
    for k, (path, name) in enumerate(files):
        if on_progress is not None:
            on_progress(k, len(files))
        shown = display_name(Path(str(name)).name)[:200] or "upload"
        if Path(shown).suffix.lower() not in IMAGE_SUFFIXES:
            res.skipped.append((shown, "not an image file"))
            continue
        try:
            rgb = load_image(str(path))
        except (ImageError, OSError, ValueError) as exc:
            res.skipped.append((shown, display_name(str(exc).replace(str(path), shown))[:120]))
            continue
        before = image_count(store)
        try:
            store.add_image(rgb, file_name=shown, split=split)
        except StoreError as exc:
            res.skipped.append((shown, str(exc)))
            continue
        if image_count(store) > before:
            res.added += 1
        else:
            res.known += 1
    log.info("%s added %d uploaded images (%d known)", actor.name or "someone", res.added, res.known)
    return res


def add_folder(store: Store, actor: Actor, folder: str, roots: Sequence[Path], split: str = "",
               progress: bool = True) -> Added:
    """Import a folder of the server (recursive) as ``import-images`` does, when the actor is an
    operator and the folder lies under an allowed root."""
    require_studio(actor, "import_folder")
    real = confined(folder, roots)
    done: FolderImport = import_images(store, real, split, progress=progress)
    log.info("%s imported folder %s: %d added, %d known", actor.name or "someone", real, done.added, done.known)
    return Added(done.added, done.known, list(done.skipped))


@dataclass
class ImageService:
    """Adding images for a studio: its store and the server folders operators may import from."""

    store: Store
    roots: Sequence[Path] = ()

    def add_uploads(self, actor: Actor, files: Sequence[tuple[str | Path, str]],
                    on_progress: Callable[[int, int], None] | None = None) -> Added:
        """See :func:`add_uploads`."""
        return add_uploads(self.store, actor, files, on_progress=on_progress)

    def add_folder(self, actor: Actor, folder: str) -> Added:
        """See :func:`add_folder` (under this studio's ``--import-root`` folders)."""
        return add_folder(self.store, actor, folder, self.roots)
