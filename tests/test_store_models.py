"""app/store/models.py: a registered model's uses are counted by its exact name (or its weights' hash),
the same on both backends."""

from __future__ import annotations

from app.store import Store


def test_uses_match_the_exact_name_or_the_weights_hash(db_at) -> None:
    s = Store(db_at("models.sqlite"))
    keys = ["a_b|deris-small|sha256:00112233aabbccdd|fp32", "aXb|deris-small|sha256:ffffffffffffffff|fp32",
            "A_B|deris-small|sha256:eeeeeeeeeeeeeeee|fp32", "other|deris-small|sha256:00112233aabbccdd|int8"]
    with s.transaction() as db:
        for k, key in enumerate(keys):
            db.execute("INSERT INTO predictions (image_id, sentence, model, score_threshold, mask_threshold, existence, "
                       "candidates, created_at) VALUES (?,?,?,?,?,?,?,?)", (1, f"s{k}", key, 0.5, 0.5, 0.9, "[]", 0.0))
    assert s.model_uses("a_b") == 1  # not aXb ('_' is no wildcard), not A_B (case counts)
    assert s.model_uses("A_B") == 1 and s.model_uses("a") == 0
    assert s.model_uses("a_b", digest="00112233aabbccdd" + "0" * 48) == 2  # the same weights under another name
