"""The collection as the Annotate view's queue: filters, position, neighbours, thumbnail pages."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..dataset.collection import thumbnail_file
from ..store import Store
from ..store.queue import ImageFilter, ImageRow, image_page, neighbour, nth, position
from .errors import BadInput

THUMBS_PER_PAGE = 24


def image_filter(name: str | None = "", split: str | None = "", status: str | None = "",
                 annotator: str | None = "", order: str | None = "") -> ImageFilter:
    """The filter of the queue boxes (empty boxes do not filter) and the order ("" by id, "uncertain")."""
    if order not in ("", None, "uncertain"):
        raise BadInput(f"unknown queue order {order!r}; expected '' (by id) or 'uncertain'")
    return ImageFilter(name or "", split or "", status or "", annotator or "", order or "")


@dataclass
class ThumbPage:
    items: list[tuple[str, str]]  # (thumbnail file, caption starting with the image id: thumb_caption)
    page: int


def thumb_caption(row: ImageRow) -> str:
    """A thumbnail's caption: the image id, its state (no refs, rejected, to do, done), the file name and
    the number of refs, in the order a narrow thumbnail still shows (the page shows it whole as its title)."""
    refs = "1 ref" if row.refs == 1 else f"{row.refs} refs"
    return f"{row.id} · {row.state} · {row.file_name} · {refs}"


class Queue:
    """Moving through the (filtered) collection."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def neighbour(self, flt: ImageFilter, image_id: int | None, step: int, without_refs: bool = False) -> int | None:
        return neighbour(self.store, flt, image_id, step, without_refs=without_refs, wrap=without_refs)

    def position(self, flt: ImageFilter, image_id: int | None) -> tuple[int | None, int]:
        """``(index or None, total)`` of an image in the filtered queue."""
        index, total = position(self.store, flt, image_id or 0)
        return (index if image_id is not None else None), total

    def nth(self, flt: ImageFilter, index: int) -> int | None:
        return nth(self.store, flt, index)

    def size(self) -> int:
        return position(self.store, ImageFilter(), 0)[1]

    def thumbnails(self, flt: ImageFilter, page: int) -> ThumbPage:
        """One page of thumbnails (the last page when ``page`` is past the end)."""
        page = max(0, int(page or 0))
        rows, total = image_page(self.store, flt, page * THUMBS_PER_PAGE, THUMBS_PER_PAGE)
        if not rows and page > 0:
            page = max(0, (total - 1) // THUMBS_PER_PAGE)
            rows, total = image_page(self.store, flt, page * THUMBS_PER_PAGE, THUMBS_PER_PAGE)
        items = []
        for r in rows:
            f: Path | None = thumbnail_file(self.store, r.id)
            if f is not None:
                items.append((str(f), thumb_caption(r)))
        return ThumbPage(items, page)
