"""``python -m app.bench preannotate`` (app/bench/cli.py): images and sentences per hour, batched across
images, per image and one pair at a time, with the CPU named."""

from __future__ import annotations

import json

from app.bench.cli import main


def test_preannotate_throughput_is_printed_with_the_cpu(capsys) -> None:
    assert main(["preannotate", "--model", "bundled", "--images", "2", "--sentences", "2", "--threads", "1",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cpu"] and "load_average_1min" in out
    (run,) = out["runs"]
    assert run["model"].startswith("bundled") and run["sentences_per_image"] == 2
    for way in ("batched_across_images", "batched_per_image", "one_pair_at_a_time"):
        assert run[way]["images_per_hour"] > 0 and run[way]["sentences_per_hour"] >= run[way]["images_per_hour"]
    assert main(["preannotate", "--model", "bundled", "--images", "1", "--sentences", "1", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "pre-annotation on" in text and "images/hour" in text and "sentences/hour" in text
