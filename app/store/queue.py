"""The collection as a queue: filtered, ordered image lists, positions, neighbours and progress.

Images are ordered by id (the order they entered the collection), or, with ``order="uncertain"``,
most uncertain first: by the largest uncertainty of the image's refs still to verify (status
``predicted``, see :mod:`app.curate.uncertainty`), ties and images without one (last) by id.
Every query is one SQL statement (by id: indexed, so moving through 100 000 images stays fast; by
uncertainty each image's key is a small indexed look-up). Nothing here knows Gradio.
"""

from __future__ import annotations

from dataclasses import dataclass

from .filters import ImageFilter, RefFilter
from .status import OPEN, RefStatus, image_state
from .store import Store

__all__ = ["ImageFilter", "ImageRow", "RefFilter", "image_ids", "image_page", "neighbour", "nth", "position", "progress",
           "ref_ids"]

def ref_ids(store: Store, flt: RefFilter) -> list[int]:
    """The ids of the refs that pass ``flt``, in id order."""
    where, args = flt.where("r")
    return [int(r[0]) for r in store.read(f"SELECT r.id FROM refs r{where} ORDER BY r.id", args)]


def image_ids(store: Store, flt: "ImageFilter") -> list[int]:
    """The ids of the images that pass ``flt``, in id order."""
    where, args = flt.where(store.dialect.like)
    return [int(r[0]) for r in store.read(f"SELECT i.id FROM images i{where} ORDER BY i.id", args)]


@dataclass
class ImageRow:
    id: int
    file_name: str
    split: str
    refs: int
    width: int
    height: int
    open_refs: int = 0  # refs still in draft or to verify (status.OPEN)
    rejected: int = 0  # refs sent back by a reviewer

    @property
    def state(self) -> str:
        """One word for the image: no refs, rejected, to do or done (:func:`.status.image_state`)."""
        return image_state(self.refs, self.open_refs, self.rejected)


def _order_by(flt: ImageFilter, forward: bool = True) -> str:
    key = flt.key()
    if key is None:
        return "i.id ASC" if forward else "i.id DESC"
    return f"{key} DESC, i.id ASC" if forward else f"{key} ASC, i.id DESC"


def _after(flt: ImageFilter, image_id: int, forward: bool = True) -> tuple[str, list]:
    """The condition "comes after (``forward``) / before ``image_id`` in the queue's order" and its arguments."""
    key = flt.key()
    op = ">" if forward else "<"
    if key is None:
        return f"i.id {op} ?", [image_id]
    mine = flt.key("j")
    first = "<" if forward else ">"  # the key sorts descending
    return (f"({key} {first} (SELECT {mine} FROM images j WHERE j.id = ?) OR ({key} = "
            f"(SELECT {mine} FROM images j WHERE j.id = ?) AND i.id {op} ?))"), [image_id, image_id, image_id]


def image_page(store: Store, flt: ImageFilter, offset: int = 0, limit: int = 30) -> tuple[list[ImageRow], int]:
    """One page of the queue (in its order) and the number of images that pass the filter."""
    where, args = flt.where(store.dialect.like)
    total = store._query(f"SELECT COUNT(*) FROM images i{where}", args)[0][0]
    open_in = ",".join("?" * len(OPEN))
    rows = store._query(
        f"SELECT i.id, i.file_name, i.split, (SELECT COUNT(*) FROM refs r WHERE r.image_id = i.id), i.width, i.height, "
        f"(SELECT COUNT(*) FROM refs r WHERE r.image_id = i.id AND r.status IN ({open_in})), "
        f"(SELECT COUNT(*) FROM refs r WHERE r.image_id = i.id AND r.status = ?) "
        f"FROM images i{where} ORDER BY {_order_by(flt)} LIMIT ? OFFSET ?",
        [*(s.value for s in OPEN), RefStatus.REJECTED.value, *args, max(1, limit), max(0, offset)])
    return [ImageRow(*r) for r in rows], int(total)


def position(store: Store, flt: ImageFilter, image_id: int) -> tuple[int, int]:
    """``(index, total)``: how many filtered images come before ``image_id``, and how many there are."""
    where, args = flt.where(store.dialect.like)
    total = store._query(f"SELECT COUNT(*) FROM images i{where}", args)[0][0]
    before_sql, before_args = _after(flt, image_id, forward=False)
    cond = where + (" AND " if where else " WHERE ") + before_sql
    before = store._query(f"SELECT COUNT(*) FROM images i{cond}", [*args, *before_args])[0][0]
    return int(before), int(total)


def neighbour(store: Store, flt: ImageFilter, image_id: int | None, step: int = 1, without_refs: bool = False,
              wrap: bool = False) -> int | None:
    """The next (``step`` 1) or previous (-1) filtered image after ``image_id`` (None: the first/last one).

    ``without_refs`` skips images that already have refs; ``wrap`` continues from the other end.
    """
    where, args = flt.where(store.dialect.like)
    if without_refs:
        where += (" AND" if where else " WHERE") + " NOT EXISTS (SELECT 1 FROM refs r WHERE r.image_id = i.id)"
    order = _order_by(flt, forward=step > 0)
    if image_id is not None:
        after_sql, after_args = _after(flt, image_id, forward=step > 0)
        cond = where + (" AND " if where else " WHERE ") + after_sql
        row = store._query(f"SELECT i.id FROM images i{cond} ORDER BY {order} LIMIT 1", [*args, *after_args])
        if row:
            return int(row[0][0])
        if not wrap:
            return None
    row = store._query(f"SELECT i.id FROM images i{where} ORDER BY {order} LIMIT 1", args)
    found = int(row[0][0]) if row else None
    return None if found == image_id else found


def nth(store: Store, flt: ImageFilter, index: int) -> int | None:
    """The id of the filtered image at ``index`` (0-based)."""
    rows, _ = image_page(store, flt, index, 1)
    return rows[0].id if rows else None


def progress(store: Store) -> dict:
    """Images done / total, refs by status, no-target and multi-target shares, and per-annotator counts.

    An image is *done* when it has refs and none of them is a draft or waits to be verified.
    """
    q = store._query
    images = q("SELECT COUNT(*) FROM images")[0][0]
    with_refs = q("SELECT COUNT(DISTINCT image_id) FROM refs")[0][0]
    open_images = q(f"SELECT COUNT(DISTINCT image_id) FROM refs WHERE status IN ({','.join('?' * len(OPEN))})",
                    [s.value for s in OPEN])[0][0]
    refs = q("SELECT COUNT(*) FROM refs")[0][0]
    by_status = dict(q("SELECT status, COUNT(*) FROM refs GROUP BY status"))
    no_target = q("SELECT COUNT(*) FROM refs WHERE no_target = 1")[0][0]
    multi = q("SELECT COUNT(*) FROM (SELECT ref_id FROM ref_instances GROUP BY ref_id HAVING COUNT(*) > 1) AS multi")[0][0]
    people = q("SELECT annotator, COUNT(*), SUM(no_target), " + ", ".join(
        f"SUM(CASE WHEN status = '{s.value}' THEN 1 ELSE 0 END)"
        for s in (RefStatus.DONE, RefStatus.REVIEWED, RefStatus.REJECTED)) +
        ", COUNT(DISTINCT image_id) FROM refs GROUP BY annotator ORDER BY COUNT(*) DESC")
    return {
        "images": images, "images_with_refs": with_refs, "images_done": with_refs - open_images,
        "refs": refs, "by_status": by_status,
        "no_target_share": no_target / refs if refs else 0.0,
        "multi_target_share": multi / refs if refs else 0.0,
        "annotators": [{"annotator": a or "(anonymous)", "refs": n, "no_target": nt or 0, "done": d or 0,
                        "reviewed": rv or 0, "rejected": rj or 0, "images": im} for a, n, nt, d, rv, rj, im in people],
    }
