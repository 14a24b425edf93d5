"""SAM through transformers: a tiny random-weight SamConfig model, served by the stand-in Hub.

Checks the coordinate transforms both ways (against SamProcessor and model-independently), that
the image embedding is computed once per image and reused for every click, and that a missing or
unreachable model leaves the GrabCut default with one logged line."""

from __future__ import annotations

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from app.refine import build_refiner  # noqa: E402
from app.refine.grabcut import GrabCutRefiner  # noqa: E402
from app.refine.sam import SamRefiner, resized_size, to_input, to_original  # noqa: E402
from tests.conftest import use_hub  # noqa: E402

SIDE = 256  # the tiny model's input side (the real one: 1024); every transform takes it as a parameter
REPO = "tiny-org/tiny-sam"
SIZES = [(60, 100), (100, 60), (768, 1024), (1024, 768), (37, 211), (300, 301), (5, 9)]


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    """A SamModel with a 2-layer 32-wide vision encoder and its processor, saved with save_pretrained."""
    from transformers import SamConfig, SamModel, SamProcessor
    from transformers.models.sam import SamImageProcessor

    cfg = SamConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=SIDE, patch_size=16,
                           output_channels=32, window_size=4, global_attn_indexes=[1], mlp_dim=64, num_pos_feats=16),
        prompt_encoder_config=dict(hidden_size=32, image_size=SIDE, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2,
                                 iou_head_hidden_dim=32))
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_sam")
    SamModel(cfg).save_pretrained(out)
    SamProcessor(SamImageProcessor(size={"longest_edge": SIDE}, pad_size={"height": SIDE, "width": SIDE})).save_pretrained(out)
    return out


@pytest.mark.parametrize("size", SIZES)
def test_points_are_scaled_as_the_processor_scales_them(tiny_sam, size):
    from transformers import SamProcessor

    proc = SamProcessor.from_pretrained(tiny_sam)
    h, w = size
    image = np.zeros((h, w, 3), np.uint8)
    pts = np.array([[0, 0], [w - 1, h - 1], [w // 3, h // 2]], np.float64)
    got = proc(images=image, input_points=[[pts.tolist()]], return_tensors="pt")
    assert tuple(got["reshaped_input_sizes"][0].tolist()) == resized_size(size, SIDE)
    np.testing.assert_allclose(got["input_points"][0, 0].numpy(), to_input(pts, size, resized_size(size, SIDE)), atol=1e-4)


@pytest.mark.parametrize("size", SIZES[:6])
def test_a_point_lands_on_its_pixel_in_the_model_input_and_back(tiny_sam, size):
    """Model-independent: a bright 3x3 dot at (x, y) in the image is found at to_input((x, y)) in the
    processor's pixels, and a logit peak put there comes back on (x, y) through to_original."""
    from transformers import SamProcessor

    proc = SamProcessor.from_pretrained(tiny_sam)
    h, w = size
    inp = resized_size(size, SIDE)
    scale = inp[1] / w
    rng = np.random.default_rng(h * 1000 + w)
    for _ in range(3):
        x, y = int(rng.integers(1, w - 1)), int(rng.integers(1, h - 1))
        image = np.zeros((h, w, 3), np.uint8)
        image[y - 1:y + 2, x - 1:x + 2] = 255
        pv = proc.image_processor(images=image, return_tensors="pt")["pixel_values"][0, 0].numpy()
        assert pv.shape == (SIDE, SIDE)
        area = pv[: inp[0], : inp[1]]  # the resized image; the rest is padding
        weight = area - area.min()  # black is the minimum: only the dot weighs
        ys, xs = np.mgrid[: inp[0], : inp[1]]
        cx = (weight * (xs + 0.5)).sum() / weight.sum()  # the dot's centre, continuous coordinates
        cy = (weight * (ys + 0.5)).sum() / weight.sum()
        px, py = to_input(np.array([x, y], np.float64), size, inp) + 0.5 * inp[1] / w  # SAM: pixel index -> centre
        assert abs(cx - px) <= max(1.0, scale) and abs(cy - py) <= max(1.0, scale), (size, x, y, cx, cy, px, py)
        # back: a peak at that place in the decoder's low-resolution frame (SIDE / 4) lands on (x, y)
        low = torch.full((1, SIDE // 4, SIDE // 4), -10.0)
        lx, ly = int(px / 4), int(py / 4)
        low[0, ly, lx] = 10.0
        back = to_original(low, size, inp, SIDE)[0].numpy()
        yy, xx = np.unravel_index(int(np.argmax(back)), back.shape)
        tol = max(1.0, 4 / scale)  # one low-resolution cell, in original pixels
        assert abs(xx - x) <= tol + 1 and abs(yy - y) <= tol + 1, (size, x, y, xx, yy)


def test_embedding_is_computed_once_per_image_and_reused_across_clicks(tiny_sam):
    r = SamRefiner.load(str(tiny_sam), device="cpu", dtype="fp32")
    calls = []
    r.model.vision_encoder.register_forward_hook(lambda *a: calls.append(1))
    image = np.random.default_rng(1).integers(0, 255, (90, 140, 3), np.uint8)
    state = r.set_image(image)
    points, labels = [], []
    for x, y, lab in [(20, 30, 1), (100, 60, 0), (70, 45, 1)]:
        points.append((x, y))
        labels.append(lab)
        res = r.refine(r.set_image(image), points, labels)  # the canvas asks for the state on every click
        assert res.masks.shape == (1, 90, 140) and res.masks.dtype == bool  # the chosen mask alone
    res = r.refine(state, None, None, (10, 10, 120, 80), np.ones((90, 140), bool))
    assert res.mask.shape == (90, 140)
    assert len(calls) == 1 and r.encoder_calls == 1
    r.set_image(image[:, ::-1].copy())  # another image: one more embedding
    assert len(calls) == 2


def test_bf16_on_cpu_runs_where_the_cpu_offers_it(tiny_sam):
    from deris_core.hardware import cpu_info

    r = SamRefiner.load(str(tiny_sam), device="cpu", dtype="bf16")
    assert r.dtype == (torch.bfloat16 if cpu_info().onednn_bf16 else torch.float32) or r.dtype == torch.float32
    image = np.random.default_rng(2).integers(0, 255, (64, 48, 3), np.uint8)
    res = r.refine(r.set_image(image), [(10, 10)], [1])
    assert res.masks.shape == (1, 64, 48) and np.isfinite(res.scores).all()


@pytest.mark.parametrize("size", [(90, 140), (140, 90)])
def test_one_click_gives_the_best_of_the_three_masks_upsampled_alone_as_when_all_three_were(tiny_sam, size):
    r = SamRefiner.load(str(tiny_sam), device="cpu", dtype="fp32")
    image = np.random.default_rng(3).integers(0, 255, (*size, 3), np.uint8)
    state = r.set_image(image)
    for x, y in [(5, 7), (size[1] // 2, size[0] // 3), (size[1] - 3, size[0] - 2)]:
        res = r.refine(state, [(x, y)], [1])
        pts = torch.tensor(to_input(np.array([[x, y]], np.float64), state.size, state.input_size), dtype=torch.float32)
        with torch.inference_mode():
            out = r.model(image_embeddings=state.embeddings, multimask_output=True, input_points=pts[None, None],
                          input_labels=torch.ones(1, 1, 1, dtype=torch.long))
        scores = out.iou_scores[0, 0].numpy()
        every = to_original(out.pred_masks[0, 0], state.size, state.input_size, state.longest) > 0  # all three, as before
        best = int(np.argmax(scores))
        assert len(scores) == 3 and res.score == pytest.approx(float(scores[best]))
        np.testing.assert_array_equal(res.mask, every[best].numpy())


def test_sam_from_the_stand_in_hub_then_offline_from_the_cache(tiny_sam, stand_in_hub, monkeypatch, tmp_path):
    stand_in_hub.add(REPO, {p.name: p.read_bytes() for p in tiny_sam.iterdir()})
    r = build_refiner(f"sam:{REPO}", device="cpu", dtype="fp32")
    assert isinstance(r, SamRefiner)
    assert any(p.endswith("/model.safetensors") for m, p in stand_in_hub.requests if m == "GET")
    stand_in_hub.requests.clear()
    use_hub(monkeypatch, stand_in_hub.url, tmp_path / "hf", offline=True)  # the same cache, no network
    again = build_refiner(f"sam:{REPO}", device="cpu", dtype="fp32")
    assert isinstance(again, SamRefiner) and stand_in_hub.requests == []


def test_unreachable_or_missing_sam_falls_back_to_grabcut_in_one_line(stand_in_hub, caplog, tmp_path):
    with caplog.at_level(logging.WARNING, logger="app.refine.build"):
        r = build_refiner("sam:nobody/no-such-sam", device="cpu")
    assert isinstance(r, GrabCutRefiner)
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "app.refine.build"]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "nobody/no-such-sam" in lines[0] and "GrabCut" in lines[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="app.refine.build"):
        assert isinstance(build_refiner(f"sam:{tmp_path / 'nothing-here'}"), GrabCutRefiner)
    assert len(caplog.records) == 1


def test_unknown_refiner_spec_is_refused():
    with pytest.raises(ValueError, match="unknown refiner"):
        build_refiner("magic")
