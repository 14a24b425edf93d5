"""``python -m app.refine.speed`` runs: tiny random SAM and SAM 2 configs (its figures mean nothing here)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")


def test_the_speed_command_prints_the_cpu_and_a_row_per_model_and_precision(capsys) -> None:
    from app.refine.speed import main
    from deris_core.hardware import cpu_info

    rows = main(["--tiny", "--size", "120x90", "--embeds", "1", "--clicks", "1", "--dtypes", "fp32",
                 "--models", "sam-vit-b,sam2-tiny"])
    out = capsys.readouterr().out
    assert cpu_info().summary() in out and "threads 2" in out and "load average at the start" in out
    assert [(r["model"], r["dtype"]) for r in rows] == [("sam-vit-b", "fp32"), ("sam2-tiny", "fp32")]
    for r in rows:
        assert len(r["embedding_s"]) == 1 and r["embedding_s"][0] > 0 and r["click_ms"] > 0
        assert f"| {r['model']} |" in out
