"""Plain records read from the store (what the UI, export and batch jobs work on)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .masks import decode_mask


@dataclass
class ImageRecord:
    id: int
    sha256: str | None
    file_name: str  # safe, one path component
    path: str | None  # where the pixels are (None: known by reference only)
    width: int
    height: int
    original_name: str = ""
    split: str = ""


@dataclass
class InstanceRecord:
    id: int
    image_id: int
    category_id: int
    rle: dict
    bbox: list[float]
    area: int
    iscrowd: bool
    source: str

    @property
    def mask(self) -> np.ndarray:
        return decode_mask(self.rle)


@dataclass
class RefRecord:
    id: int
    image_id: int
    sentences: list[str]
    instance_ids: list[int]
    no_target: bool
    split: str
    author: str  # who the ref is by (the ``refs.annotator`` column)
    status: str
    created_at: float
    updated_at: float
    sentence_ids: list[int] = field(default_factory=list)
    version: int = 1
    editor: str = ""  # who wrote the current content (sentences, targets, no-target flag)


@dataclass
class RefRow:
    """One line of a paginated ref list (no masks)."""

    id: int
    image_id: int
    file_name: str
    sentences: str  # " | "-joined
    targets: int
    no_target: bool
    split: str
    status: str
    author: str  # ``refs.annotator``
    updated_at: float
    version: int


@dataclass
class Event:
    id: int
    ref_id: int
    at: float
    actor: str  # who did it (the ``events.user`` column)
    action: str  # create, edit, status, delete, import
    detail: dict


@dataclass
class Snapshot:
    """Everything in a store, as plain data (what export/import functions work on)."""

    images: list[ImageRecord]
    categories: dict[int, str]
    instances: list[InstanceRecord]
    refs: list[RefRecord]
