"""What people have already answered: the sentences of refs made by a person, by image.

Pre-annotation asks this before running the model, so it never proposes a model-made ref for an
(image, sentence) pair a person already answered (the *to verify* queue would ask people to do
their own work again). Only raw text is returned; callers normalise it as agreement does.
"""

from __future__ import annotations

import unicodedata
from typing import Iterable

from .store import Store


def sentence_key(text: str) -> str:
    """What makes two answers "the same sentence": Unicode-normalised (NFKC), case-folded, single spaces.
    Done in Python for every comparison (SQLite's ``lower()`` folds ASCII only); agreement
    (:mod:`app.curate.quality`) and pre-annotation's skip of answered pairs use this one rule."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def person_sentences(store: Store, image_ids: Iterable[int]) -> list[tuple[int, str]]:
    """``(image id, raw sentence)`` of every ref on those images made by a person (an annotator
    that is neither empty, ``model:...`` nor ``consensus...``), all sentences of each ref."""
    ids = sorted({int(i) for i in image_ids})
    out: list[tuple[int, str]] = []
    for start in range(0, len(ids), 500):  # bounded IN lists: SQLite's parameter limit
        chunk = ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        out += [(int(i), str(raw)) for i, raw in store.read(
            "SELECT r.image_id, s.raw FROM refs r JOIN sentences s ON s.ref_id = r.id "
            f"WHERE r.image_id IN ({marks}) AND r.annotator <> '' AND r.annotator NOT LIKE 'model:%' "
            "AND r.annotator NOT LIKE 'consensus%'", chunk)]
    return out
