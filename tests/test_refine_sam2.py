"""SAM 2 through transformers (``--refiner sam2:...``): a tiny random-weight Sam2Config model saved with
save_pretrained and served by the stand-in Hub. Checks the square input's coordinate transform (a dot at
(x, y) is found at to_input((x, y)) in the model's pixels at any aspect ratio), that the embedding (SAM 2's
feature levels) is computed once per image across clicks, points / box / prior, and the GrabCut fallback."""

from __future__ import annotations

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from app.refine import build_refiner  # noqa: E402
from app.refine.grabcut import GrabCutRefiner  # noqa: E402
from app.refine.sam import to_input  # noqa: E402
from app.refine.sam2 import Sam2Refiner  # noqa: E402

REPO = "tiny-org/tiny-sam2"


@pytest.fixture(scope="module")
def tiny_sam2(tmp_path_factory):
    from app.refine.speed import sam2_model

    torch.manual_seed(0)
    model, side = sam2_model("sam2-tiny", tiny=True)
    out = tmp_path_factory.mktemp("tiny_sam2")
    model.save_pretrained(out)
    return out, side


@pytest.mark.parametrize("size", [(60, 100), (100, 60), (37, 211)])
def test_a_point_lands_on_its_pixel_in_the_square_input(tiny_sam2, size):
    folder, side = tiny_sam2
    r = Sam2Refiner.load(str(folder), device="cpu", dtype="fp32")
    h, w = size
    rng = np.random.default_rng(h * 1000 + w)
    for _ in range(3):
        x, y = int(rng.integers(2, w - 2)), int(rng.integers(2, h - 2))
        image = np.zeros((h, w, 3), np.uint8)
        image[y - 1:y + 2, x - 1:x + 2] = 255
        pv = r.pixels(image)[0, 0].float().numpy()
        weight = pv - pv.min()
        ys, xs = np.mgrid[:side, :side]
        cx, cy = (weight * (xs + 0.5)).sum() / weight.sum(), (weight * (ys + 0.5)).sum() / weight.sum()
        px, py = to_input(np.array([x + 0.5, y + 0.5]), size, (side, side))  # the pixel's centre, in the square
        assert abs(cx - px) <= max(1.0, side / w) and abs(cy - py) <= max(1.0, side / h), (size, x, y, cx, cy, px, py)


def test_sam2_from_the_stand_in_hub_embeds_once_and_refines(tiny_sam2, stand_in_hub):
    folder, _ = tiny_sam2
    stand_in_hub.add(REPO, {p.name: p.read_bytes() for p in folder.iterdir()})
    r = build_refiner(f"sam2:{REPO}", device="cpu", dtype="fp32")
    assert isinstance(r, Sam2Refiner) and r.name == "sam2"
    image = np.random.default_rng(1).integers(0, 255, (90, 140, 3), np.uint8)
    points, labels = [], []
    for x, y, lab in [(20, 30, 1), (100, 60, 0), (70, 45, 1)]:
        points.append((x, y))
        labels.append(lab)
        res = r.refine(r.set_image(image), points, labels)
        assert res.masks.shape == (1, 90, 140) and res.masks.dtype == bool and np.isfinite(res.scores).all()
    prior = np.zeros((90, 140), bool)
    prior[20:60, 30:100] = True
    assert r.refine(r.set_image(image), None, None, (10, 10, 120, 80), prior).mask.shape == (90, 140)
    assert r.refine(r.set_image(image), None, None, None, prior).mask.shape == (90, 140)
    assert r.encoder_calls == 1


def test_unreachable_sam2_falls_back_to_grabcut_in_one_line(stand_in_hub, caplog):
    with caplog.at_level(logging.WARNING, logger="app.refine.build"):
        assert isinstance(build_refiner("sam2:nobody/no-such-sam2", device="cpu"), GrabCutRefiner)
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "app.refine.build"]
    assert len(lines) == 1 and "nobody/no-such-sam2" in lines[0] and "GrabCut" in lines[0]
