"""The filters of the studio's lists, as plain data with their SQL: :class:`ImageFilter` (the
collection queue) and :class:`RefFilter` (every ref list: the Dataset tab's page, the review
queue, an export, a fine-tune's selection, a qa run). The queries that use them are in
:mod:`app.store.queue`, :mod:`app.store.refs` and :mod:`app.store.review`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .predictions import image_uncertainty_sql
from .records import RefRecord
from .status import OPEN, RefStatus, ref_status


@dataclass(frozen=True)
class ImageFilter:
    """Which images the queue shows; empty fields do not filter.

    ``status`` is a ref status (images with at least one such ref), ``"none"`` (images without
    refs) or ``"todo"`` (no refs, or a ref still in draft / to verify).
    """

    name: str = ""
    split: str = ""
    status: str = ""
    annotator: str = ""
    order: str = ""  # "" by id, "uncertain": most uncertain first

    def key(self, alias: str = "i") -> str | None:
        """The SQL sort key of an image (descending), None for the id order."""
        if self.order != "uncertain":
            return None
        return image_uncertainty_sql(alias)

    def where(self, like: str = "LIKE") -> tuple[str, list]:
        """The SQL condition on images ``i`` and its arguments; ``like``: the store's case-insensitive LIKE."""
        cond, args = [], []
        if self.name.strip():
            cond.append(f"(i.file_name {like} ? ESCAPE '\\' OR i.original_name {like} ? ESCAPE '\\')")
            pat = "%" + self.name.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            args += [pat, pat]
        if self.split:
            cond.append("(i.split = ? OR EXISTS (SELECT 1 FROM refs r WHERE r.image_id = i.id AND r.split = ?))")
            args += [self.split, self.split]
        if self.status == "none":
            cond.append("NOT EXISTS (SELECT 1 FROM refs r WHERE r.image_id = i.id)")
        elif self.status == "todo":
            cond.append("(NOT EXISTS (SELECT 1 FROM refs r WHERE r.image_id = i.id) OR EXISTS "
                        f"(SELECT 1 FROM refs r WHERE r.image_id = i.id AND r.status IN ({','.join('?' * len(OPEN))})))")
            args += [s.value for s in OPEN]
        elif self.status:
            cond.append("EXISTS (SELECT 1 FROM refs r WHERE r.image_id = i.id AND r.status = ?)")
            args.append(self.status)
        if self.annotator.strip():
            cond.append("EXISTS (SELECT 1 FROM refs r WHERE r.image_id = i.id AND r.annotator = ?)")
            args.append(self.annotator.strip())
        return (" WHERE " + " AND ".join(cond)) if cond else "", args


_NOT_PEOPLE = ("model:%", "consensus%")  # the annotator names of refs made by the model or by consensus


@dataclass(frozen=True)
class RefFilter:
    """Which refs a list shows (the Dataset tab's page, the review queue, an export, a fine-tune's
    selection, a qa run); empty fields do not filter. One filter, two renderings: SQL
    (:meth:`where`) for the store's queries and a predicate (:meth:`matches`) for a snapshot.

    ``author`` None: anyone (``""`` is the anonymous author); ``people_only``: not made by the
    model (``model:...``) nor by consensus (``consensus(...)``)."""

    statuses: tuple[RefStatus, ...] = ()
    split: str = ""
    author: str | None = None  # the ``refs.annotator`` column
    image_id: int | None = None
    people_only: bool = False

    def __post_init__(self) -> None:
        statuses = (self.statuses,) if isinstance(self.statuses, str) else tuple(self.statuses or ())
        object.__setattr__(self, "statuses", tuple(ref_status(s) for s in statuses))

    @classmethod
    def of(cls, status: str | Iterable[str] | None = None, split: str | None = None, author: str | None = None,
           image_id: int | None = None, people_only: bool = False) -> "RefFilter":
        """From the boxes of a view or the options of a command line (``None`` / ``""``: no filter)."""
        statuses = () if not status else (status,) if isinstance(status, str) else tuple(status)
        return cls(statuses, split or "", author, None if image_id in (None, "") else int(image_id), people_only)

    def where(self, alias: str = "r") -> tuple[str, list]:
        """The SQL condition on refs ``alias`` (``" WHERE ..."`` or ``""``) and its arguments."""
        cond, args = [], []
        if self.statuses:
            cond.append(f"{alias}.status IN ({','.join('?' * len(self.statuses))})")
            args += [s.value for s in self.statuses]
        for col, val in (("split", self.split or None), ("annotator", self.author), ("image_id", self.image_id)):
            if val is not None:
                cond.append(f"{alias}.{col} = ?")
                args.append(val)
        if self.people_only:
            cond += [f"{alias}.annotator NOT LIKE ?" for _ in _NOT_PEOPLE]
            args += list(_NOT_PEOPLE)
        return (" WHERE " + " AND ".join(cond)) if cond else "", args

    def matches(self, ref: RefRecord) -> bool:
        """The same condition on a ref record."""
        return ((not self.statuses or ref.status in self.statuses) and (not self.split or ref.split == self.split)
                and (self.author is None or ref.author == self.author)
                and (self.image_id is None or ref.image_id == self.image_id)
                and (not self.people_only or not ref.author.startswith(("model:", "consensus"))))

    @property
    def empty(self) -> bool:
        return self == RefFilter()
