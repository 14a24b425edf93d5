"""Per-person review statistics: counted in SQL and incrementally, equal to parsing every review
event, whatever the names and comments hold (quotes, backslashes, the key text itself, Unicode)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np

from app.store import Store
from app.store.review import person_stats, review


def _naive(store: Store) -> list[dict]:
    """The definition: every review event parsed."""
    made = dict(store.read("SELECT annotator, COUNT(*) FROM refs GROUP BY annotator"))
    dec: dict[str, dict[str, int]] = {}
    rev: dict[str, int] = {}
    for user, detail in store.read('SELECT "user", detail FROM events WHERE action = \'review\''):
        d = json.loads(detail)
        dec.setdefault(d.get("author", ""), {"accept": 0, "reject": 0})[d.get("decision", "accept")] += 1
        rev[user] = rev.get(user, 0) + 1
    out = []
    for p in sorted(set(made) | set(dec) | set(rev)):
        a, r = dec.get(p, {}).get("accept", 0), dec.get(p, {}).get("reject", 0)
        out.append({"person": p or "(anonymous)", "refs_made": made.get(p, 0), "accepted": a, "rejected": r,
                    "acceptance_rate": a / (a + r) if a + r else None, "reviews_given": rev.get(p, 0)})
    return out


AUTHORS = ["ann", 'bo"b', "back\\slash", "Zoë 東", "", 'x"}, "author": "mallory', "tab\tname"]
COMMENTS = ["", '"decision": "reject"', '"author": "eve"}', "ünïcode ✓", "\\\"", "a} {b"]


def test_person_stats_equal_the_definition_for_hostile_names_and_comments(db_at, tmp_path: Path) -> None:
    s = Store(db_at("s.sqlite"))
    img = s.add_image(np.zeros((8, 8, 3), np.uint8))
    k = 0
    for author in AUTHORS:
        for comment in COMMENTS:
            rid = s.save_ref(img, [f"thing {k}"], no_target=True, author=author)
            decision = ("accept", "reject")[k % 2]
            review(s, rid, decision, f"rev{k % 3}", reason="wrong_mask" if decision == "reject" else None, comment=comment)
            k += 1
            if k % 7 == 0:
                assert person_stats(s) == _naive(s)  # incremental, between writes
    # an event written by an older version, keys in another order: parsed whole
    with s.transaction() as db:
        db.execute("INSERT INTO events (ref_id, at, \"user\", action, detail) VALUES (1, 0, 'old', 'review', ?)",
                   (json.dumps({"author": "ann", "decision": "reject", "from": "done"}),))
        db.execute("INSERT INTO events (ref_id, at, \"user\", action, detail) VALUES (1, 0, 'old', 'review', ?)",
                   (json.dumps({"decision": "accept"}),))
    assert person_stats(s) == _naive(s)
    assert person_stats(Store(s.location)) == _naive(s)  # a fresh handle counts from scratch


def test_person_stats_see_decisions_made_by_other_processes_and_threads(db_at, tmp_path: Path) -> None:
    path = db_at("t.sqlite")
    s = Store(path)
    img = s.add_image(np.zeros((8, 8, 3), np.uint8))
    ids = [s.save_ref(img, [f"r{k}"], no_target=True, author=f"a{k % 3}") for k in range(60)]
    person_stats(s)
    other = Store(path)  # another handle, as another process would have

    def reviewer(part: list[int], name: str) -> None:
        for rid in part:
            review(other, rid, "accept" if rid % 2 else "reject", name, reason="ambiguous")

    threads = [threading.Thread(target=reviewer, args=(ids[i::3], f"rev{i}")) for i in range(3)]
    readers_ok = []

    def reader() -> None:
        for _ in range(20):
            person_stats(s)
            time.sleep(0.005)
        readers_ok.append(True)

    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert readers_ok == [True, True]
    assert person_stats(s) == _naive(s)
    assert sum(p["reviews_given"] for p in person_stats(s)) == 60
