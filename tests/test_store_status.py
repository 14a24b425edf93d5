"""The ref statuses and their one transition function (app/store/status.py), and the one ref filter
(app/store/filters.py) whose SQL and predicate agree on a real store."""

from __future__ import annotations

import numpy as np
import pytest

from app.store import RefAction, RefFilter, RefStatus, Store, StoreError, next_status, save_action
from app.store.queue import ref_ids
from app.store.review import review_queue


def test_the_statuses_are_the_stored_values() -> None:
    assert [s.value for s in RefStatus] == ["draft", "predicted", "done", "reviewed", "rejected"]
    assert RefStatus.DONE == "done" and str(RefStatus.REVIEWED) == "reviewed"


@pytest.mark.parametrize("old", [None, *RefStatus])
def test_every_action_moves_every_status_as_the_table_says(old) -> None:
    assert next_status(old, RefAction.SAVE_DRAFT) is RefStatus.DRAFT
    assert next_status(old, RefAction.SUBMIT) is RefStatus.DONE
    assert next_status(old, RefAction.PREDICT) is RefStatus.PREDICTED
    assert next_status(old, RefAction.ACCEPT, "rev") is RefStatus.REVIEWED
    assert next_status(old, RefAction.REJECT, "rev") is RefStatus.REJECTED
    if old is None:
        for action in (RefAction.TAKE_BACK, RefAction.REOPEN):
            with pytest.raises(StoreError):
                next_status(None, action)
        return
    # an answer taken back leaves review only when it awaits review
    assert next_status(old, RefAction.TAKE_BACK, "ann") is (RefStatus.DRAFT if old is RefStatus.DONE else old)
    # a rejected or predicted ref is proposed as done when reopened; the others keep their status
    expected = RefStatus.DONE if old in (RefStatus.REJECTED, RefStatus.PREDICTED) else old
    assert next_status(old.value, RefAction.REOPEN) is expected


def test_unknown_statuses_and_actions_are_refused_in_one_line() -> None:
    with pytest.raises(StoreError, match="unknown status 'finished'; expected one of draft, predicted"):
        next_status("finished", RefAction.SUBMIT)
    with pytest.raises(StoreError, match="unknown ref action 'approve'"):
        next_status("done", "approve")
    assert save_action("reviewed") is RefAction.ACCEPT and save_action(RefStatus.DRAFT) is RefAction.SAVE_DRAFT
    with pytest.raises(StoreError, match="unknown status"):
        save_action("finished")


@pytest.fixture()
def varied(db_at) -> Store:
    s = Store(db_at("f.sqlite"))
    a = s.add_image(np.zeros((8, 8, 3), np.uint8))
    b = s.add_image(np.ones((8, 8, 3), np.uint8))
    for n, (img, author, status, split) in enumerate([
            (a, "ann", "done", "train"), (a, "bob", "reviewed", "val"), (b, "ann", "rejected", "val"),
            (b, "", "draft", "train"), (a, "model:x", "predicted", "train"), (b, "consensus(ann,bob)", "done", "testA")]):
        s.save_ref(img, [f"ref {n}"], no_target=True, author=author, status=status, split=split)
    return s


FILTERS = [RefFilter(), RefFilter.of("done"), RefFilter.of(("done", "reviewed")), RefFilter.of(split="val"),
           RefFilter.of(author="ann"), RefFilter.of(author=""), RefFilter.of(image_id=1),
           RefFilter.of(("done", "reviewed", "rejected"), people_only=True), RefFilter.of("done", "train", "ann", 1)]


@pytest.mark.parametrize("flt", FILTERS, ids=repr)
def test_the_ref_filter_means_the_same_in_sql_and_on_a_snapshot(varied: Store, flt: RefFilter) -> None:
    matching = [r.id for r in varied.refs() if flt.matches(r)]
    assert ref_ids(varied, flt) == matching
    rows, total = varied.refs_page(0, 50, flt, newest_first=False)
    assert [r.id for r in rows] == matching and total == len(matching)
    rows, total = review_queue(varied, 0, 50, flt=flt)
    assert sorted(r.id for r in rows) == matching and total == len(matching)


def test_the_filters_keywords_still_work_and_bad_statuses_are_refused(varied: Store) -> None:
    assert [r.id for r in varied.refs_page(0, 50, status="done", newest_first=False)[0]] == [1, 6]
    assert [r.id for r in review_queue(varied, 0, 50)[0]] == [1, 6]  # awaiting review, oldest first
    assert RefFilter.of("") == RefFilter() and RefFilter().empty and not RefFilter.of(split="val").empty
    with pytest.raises(StoreError, match="unknown status 'finished'"):
        RefFilter.of("finished")
