"""The collection as the Dataset tab sees it: progress, per-person review statistics, the saved refs
a page at a time (one :class:`~app.store.RefFilter`), and the export of a gRefCOCO zip."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..dataset.export import clean_stale_exports, export_zip, new_export_path
from ..store import RefFilter, RefRow, Store, StoreError
from ..store.queue import progress
from ..store.review import person_stats


@dataclass
class RefPage:
    """One page of the ref list: its rows, the page shown (clamped to the last one) and the counts."""

    rows: list[RefRow]
    page_no: int
    pages: int
    total: int


@dataclass
class Exported:
    path: Path
    summary: dict  # refs, annotations, images


class DatasetService:
    """Reading the collection as a whole, and exporting it, over one store."""

    def __init__(self, store: Store, export_dir: Path) -> None:
        self.store, self.export_dir = store, Path(export_dir)

    def progress(self) -> dict:
        return progress(self.store)

    def person_stats(self) -> list[dict]:
        return person_stats(self.store)

    def image_count(self) -> int:
        """How many images the collection holds (an empty studio offers to add some)."""
        from ..store.counts import image_count

        return image_count(self.store)

    def page(self, flt: RefFilter, page_no: int, size: int) -> RefPage:
        """Page ``page_no`` (1-based, newest first) of the refs that pass ``flt``; past the end: the last page."""
        page_no = max(1, int(page_no or 1))
        rows, total = self.store.refs_page((page_no - 1) * size, size, flt)
        pages = max(1, -(-total // size))
        if page_no > pages:
            page_no = pages
            rows, total = self.store.refs_page((page_no - 1) * size, size, flt)
        return RefPage(rows, page_no, pages, total)

    def export(self, status: str | None = None) -> Exported:
        """The gRefCOCO zip of the refs (with this status) under a new name in the export folder; an
        error names the folder, never its path."""
        clean_stale_exports(self.export_dir)
        out = new_export_path(self.export_dir)  # unique: people exporting at the same second get their own file
        try:
            summary = export_zip(self.store, out, status=status or None)
        except StoreError as exc:
            raise StoreError(str(exc).replace(str(self.export_dir), "the export folder")) from None
        return Exported(out, summary)
