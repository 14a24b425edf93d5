"""The application layer between the views / command lines and the store: the shared model and
its image features (:mod:`.model`), the open image of a session (:mod:`.workspace`), refs and
their one permission table (:mod:`.refs`, :mod:`.permissions`) and the collection queue
(:mod:`.queue`), the next image's features prepared in the background (:mod:`.prefetch`, over the
server's feature cache of :mod:`.features`), the typed expression run before Enter (:mod:`.speculate`),
the promptable refiner of the canvas (:mod:`.refine`) and the verification of proposed negatives
(:mod:`.negatives`). Nothing here knows Gradio; the views turn its errors into messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..auth import Users
from ..viewkit.session import SessionRegistry
from ..store import (SPLITS, STATUSES, ConflictError, Event, ImageFilter, OutcomeUnknown, RefAction, RefFilter,
                     RefRecord, RefRow, RefStatus, Store, StoreError, image_digest)
from ..store.negatives import DECISIONS, Negative
from ..store.review import REASONS, Decision
from .dataset import DatasetService
from .errors import BadInput, NoModel, Refused, UserError
from .images import ImageService
from .model import ModelHolder
from .negatives import NegativeService
from .permissions import Actor, can, require
from .prefetch import Prefetcher
from .queue import Queue
from .refine import Refined, RefinerHolder
from .refs import RefService
from .review import Changes, Rejection, compare
from .speculate import Speculator
from .workspace import Workspace

__all__ = ["Actor", "BadInput", "Changes", "ImageService", "ModelHolder", "NegativeService", "NoModel", "Prefetcher", "Queue",
           "RefService", "Refined", "RefinerHolder", "Refused", "Rejection", "Services", "Speculator", "UserError", "Workspace",
           "can", "compare", "export_folder", "require", "studio_cache", "thumbnail_folder",
           # the store's vocabulary the views speak (views import the services, never the store)
           "ConflictError", "DECISIONS", "DatasetService", "Decision", "Event", "ImageFilter", "Negative", "REASONS",
           "RefAction", "RefFilter", "RefRecord", "RefRow", "RefStatus", "SPLITS", "STATUSES", "StoreError", "OutcomeUnknown", "image_digest"]


def thumbnail_folder(store: Store) -> Path:
    """Where cached thumbnails live (pass it to ``launch(allowed_paths=...)``; the full images stay private)."""
    return store.media_dir / "thumbs"


def studio_cache() -> Path:
    """Where a studio on a PostgreSQL database keeps its local caches (thumbnails, exports):
    ``$DERIS_CACHE/studio`` (pass it to :class:`~app.store.Store` as ``cache_root``)."""
    from deris_core.weight_cache import cache_dir

    return cache_dir() / "studio"


def export_folder(store: Store) -> Path:
    """Where the app writes exports: next to the database (pass it to ``launch(allowed_paths=...)``)."""
    return store.exports_dir


@dataclass
class Services:
    """Everything the views use, built once per studio."""

    model: ModelHolder
    store: Store
    sessions: SessionRegistry = field(default_factory=SessionRegistry)
    export_dir: Path | None = None
    max_image_side: int = 4096
    device: str = "auto"
    switchable: dict[str, str] | None = None  # labels of weights visitors may load -> their specs
    users: Users | None = None
    import_roots: list[Path] | None = None  # --import-root: folders of the server operators may import from
    refiner: RefinerHolder | None = None  # the canvas's prompt tools (launch.py --refiner); None: GrabCut

    @property
    def images(self) -> ImageService:
        """Adding images, under the ``--import-root`` folders as they are now."""
        return ImageService(self.store, list(self.import_roots or []))

    def __post_init__(self) -> None:
        self.refiner = self.refiner if self.refiner is not None else RefinerHolder()
        self.export_dir = Path(self.export_dir) if self.export_dir else export_folder(self.store)
        self.refs = RefService(self.store)
        self.queue = Queue(self.store)
        self.negatives = NegativeService(self.store)
        self.speculation = Speculator(self.model)  # the expression run while the annotator types
        self.workspace = Workspace(self.model, self.store, self.max_image_side, self.speculation)
        self.dataset = DatasetService(self.store, self.export_dir)
        self.prefetch = Prefetcher(self.model, self.store, self.max_image_side, self.speculation)
        from .jobs import Jobs

        self.jobs = Jobs(self.store)

    def actor(self, username: str | None, typed: str | None = "") -> Actor:
        """Who acts: the signed-in user with accounts (``--auth``), else the name typed in the box."""
        if self.users is not None:
            user = self.users.get(username)
            if not username or user is None:
                raise Refused("Sign in first.")
            return Actor(user.name, frozenset(user.roles), accounts=True)
        return Actor(" ".join((typed or "").split()))
