"""Golden fixtures: our model reproduces every intermediate of the official forward pass.

Each ``../shared/reference/fixtures/*.pt`` holds official weights of a reduced config, the
raw photo, token ids and every official intermediate output. One test per file.

``DERIS_TEST_DEVICE=cuda`` runs the model on the GPU (``deris_core/gpu_check.sh``); the
tolerances stay those of the CPU (TF32 is switched off for the run).
"""

from __future__ import annotations

import json
from typing import NamedTuple

import numpy as np
import pytest
import torch

from deris_core.checkpoint import convert_official_state_dict, load_into
from deris_core.config import DeRISConfig, config_from_official_fixture
from deris_core.model import DeRIS, DeRISOutput, ImageFeatures, build_deris
from deris_core.model.deris import _map_tensors
from deris_core.model.decoder import upsample_masks
from deris_core.model.swin import relative_position_index
from deris_core.postprocess import binary_masks, boxes_to_original, referring_scores, resize_nearest, union_of_referred
from deris_core.preprocess import Preprocessed, preprocess

from .conftest import TEST_DEVICE, fixture_files

ATOL = 1e-4


class Run(NamedTuple):
    """One fixture file, our model loaded with its weights, and our outputs."""

    cfg: DeRISConfig
    cfg_dict: dict
    data: dict
    pre: Preprocessed
    feats: ImageFeatures
    out: DeRISOutput
    model: DeRIS


def _close(name: str, ours: torch.Tensor, ref: torch.Tensor, atol: float = ATOL) -> None:
    assert tuple(ours.shape) == tuple(ref.shape), f"{name}: shape {tuple(ours.shape)} vs {tuple(ref.shape)}"
    diff = (ours.detach().float().cpu() - ref.float()).abs().max().item()
    assert diff <= atol, f"{name}: max abs diff {diff:.3g} > {atol}"


def _cpu(obj):
    return _map_tensors(obj, lambda t: t.cpu())


def _on_device(inputs: dict) -> dict:
    return {k: v.to(TEST_DEVICE) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


@pytest.fixture(scope="module", autouse=True)
def _no_tf32():
    """On CUDA, full fp32 convolutions and matmuls (TF32 would leave the 1e-4 tolerance)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture(scope="module", params=fixture_files(), ids=lambda p: p.name)
def fixture_run(request):
    data = torch.load(request.param, map_location="cpu", weights_only=True)
    cfg_dict = json.loads(data["config"])
    cfg = config_from_official_fixture(cfg_dict)
    model = build_deris(cfg)
    # Buffers we drop from the mapping must equal what we recompute.
    for k, v in data["state_dict"].items():
        if k.endswith("relative_position_index"):
            w = int(round(v.shape[0] ** 0.5))
            assert torch.equal(v, relative_position_index(w)), k
    load_into(model, convert_official_state_dict(data["state_dict"]), cfg.name, request.param.name)
    model.to(TEST_DEVICE)
    inputs = _on_device(data["inputs"])
    pre = preprocess(inputs["raw_image_rgb"].cpu().numpy(), cfg.swin.img_size, cfg.beit3.img_size)
    with torch.inference_mode():
        feats = model.encode_image(inputs["img"], inputs["img_mini"])
        out = model.decode(feats, inputs["ref_expr_inds"], inputs["text_attention_mask"])
    feats, out = _cpu(feats), _cpu(out)
    return Run(cfg, cfg_dict, data, pre, feats, out, model)


def test_preprocessing(fixture_run):
    cfg_dict = fixture_run.cfg_dict
    data = fixture_run.data
    pre = fixture_run.pre
    _close("img", pre.image, data["inputs"]["img"])
    _close("img_mini", pre.image_mini, data["inputs"]["img_mini"])
    assert list(pre.original_size) == cfg_dict["ori_shape"][:2]
    np.testing.assert_allclose(pre.scale_factor, cfg_dict["scale_factor"], rtol=1e-6)


def test_cognition_features(fixture_run):
    data = fixture_run.data
    out = fixture_run.out
    ref = data["outputs"]["pre_forward"]
    t = out.text_length  # trailing padding is not run (see trim_padding); real tokens must match
    assert int((data["inputs"]["text_attention_mask"] == 0).sum()) <= t
    _close("img_feat", out.cognition.img_feat, ref["img_feat"])
    _close("text_feat", out.cognition.text_feat, ref["text_feat"][:, :t])
    _close("query_feat", out.cognition.query_feat, ref["query_feat"])
    _close("cls_feat", out.cognition.cls_feat, ref["cls_feat"])


def test_backbone_and_pixel_decoder(fixture_run):
    data = fixture_run.data
    feats = fixture_run.feats
    ref = data["outputs"]
    for i, name in enumerate(("res2", "res3", "res4", "res5")):
        _close(name, feats.perception.backbone_features[i], ref["swin_features"][name])
    pd = ref["pixel_decoder"]
    _close("mask_features", feats.perception.mask_features, pd["mask_features"])
    _close("transformer_encoder_features", feats.perception.multi_scale[0], pd["transformer_encoder_features"])
    for i, m in enumerate(pd["multi_scale_features"]):
        _close(f"multi_scale[{i}]", feats.perception.multi_scale[i], m)


def test_perception_outputs(fixture_run):
    data = fixture_run.data
    out = fixture_run.out
    ref = data["outputs"]["perception"]
    _close("pred_masks", out.pred_masks, ref["pred_masks"])
    _close("pred_logits", out.class_logits, ref["pred_logits"])
    _close("pred_refer_logits", out.refer_logits, ref["pred_refer_logits"])
    _close("pred_boxes", out.boxes, ref["pred_boxes"])
    _close("query_feat", out.decoder.queries, ref["query_feat"])
    dec = out.decoder
    for i, (aux_p, aux_r) in enumerate(zip(ref["aux_outputs_perception"], ref["aux_outputs_refer"])):
        _close(f"aux[{i}].pred_masks", upsample_masks(dec.mask_logits[i]), aux_p["pred_masks"])
        _close(f"aux[{i}].pred_boxes", dec.boxes[i], aux_p["pred_boxes"])
        _close(f"aux[{i}].pred_logits", dec.class_logits[i], aux_p["pred_logits"])
        _close(f"aux_refer[{i}].pred_logits", dec.refer_logits[i], aux_r["pred_logits"])


def test_post_forward(fixture_run):
    data = fixture_run.data
    out = fixture_run.out
    ref = data["outputs"]["post_forward"]
    _close("pred_existence", out.existence_logit, ref["pred_existence"])
    _close("pred_logits", out.cognition_logits, ref["pred_logits"])


def _final_mask(cfg, pre, out) -> np.ndarray:
    scores = referring_scores(out.refer_logits[0])
    masks = binary_masks(out.pred_masks[0], cfg.postprocess.mask_threshold)
    return resize_nearest(union_of_referred(masks, scores, cfg.postprocess.score_threshold).numpy(), pre.original_size)


def _assert_same_mask(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape
    differing = int((ours != ref).sum())
    assert differing <= 0.001 * ours.size, f"{differing} of {ours.size} pixels differ"


def test_user_path_from_raw_photo(fixture_run):
    """Raw photo -> our pre-processing -> our model -> final mask, as a user runs it."""
    cfg = fixture_run.cfg
    data = fixture_run.data
    pre = fixture_run.pre
    model = fixture_run.model
    with torch.inference_mode():
        inputs = _on_device(data["inputs"])
        out = _cpu(model(pre.image.to(TEST_DEVICE), pre.image_mini.to(TEST_DEVICE), inputs["ref_expr_inds"],
                         inputs["text_attention_mask"]))
    _assert_same_mask(_final_mask(cfg, pre, out), data["outputs"]["postprocess"]["final_mask"].numpy())


def test_plain_linear_path(fixture_run, monkeypatch):
    """The F.linear path (training, CUDA, other dtypes) matches the fixture too, not only oneDNN."""
    from deris_core.model import layers

    monkeypatch.setattr(layers, "_ONEDNN", False)
    data = fixture_run.data
    model = fixture_run.model
    inputs = _on_device(data["inputs"])
    with torch.inference_mode():
        out = model(inputs["img"], inputs["img_mini"], inputs["ref_expr_inds"], inputs["text_attention_mask"])
    ref = data["outputs"]
    _close("pred_masks", out.pred_masks, ref["perception"]["pred_masks"])
    _close("pred_refer_logits", out.refer_logits, ref["perception"]["pred_refer_logits"])
    _close("pred_existence", out.existence_logit, ref["post_forward"]["pred_existence"])


def test_postprocess(fixture_run):
    cfg = fixture_run.cfg
    cfg_dict = fixture_run.cfg_dict
    data = fixture_run.data
    pre = fixture_run.pre
    out = fixture_run.out
    ref = data["outputs"]["postprocess"]
    scores = referring_scores(out.refer_logits[0])
    _close("scores", scores, ref["scores"], atol=1e-5)
    nt = 1 - out.existence_logit[0].sigmoid()
    _close("pred_nt", nt, ref["pred_nt"], atol=1e-5)
    boxes = boxes_to_original(out.boxes[0], (cfg.swin.img_size,) * 2, pre.scale_factor)
    _close("boxes", boxes, ref["boxes_xyxy_rescaled"], atol=1e-2)
    masks = binary_masks(out.pred_masks[0], cfg.postprocess.mask_threshold)
    union = union_of_referred(masks, scores, cfg.postprocess.score_threshold)
    assert int((scores > cfg.postprocess.score_threshold).sum()) == ref["num_queries_passing"]
    h, w = cfg_dict["ori_shape"][:2]
    _assert_same_mask(resize_nearest(union.numpy(), (h, w)), ref["final_mask"].numpy())
    assert (masks.numpy() != ref["pred_masks_binary_384"].numpy()).mean() <= 0.001
