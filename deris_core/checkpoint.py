"""Official checkpoints -> our state dict, safe loading, and our safetensors format.

``convert_official_state_dict`` maps the official key names to ours (like timm's
``checkpoint_filter_fn``); ``deris_core.weights`` also reads two official keys to tell a
checkpoint's vocabulary and query count before converting it. Official checkpoints are loaded with
``torch.load(weights_only=True)``; the only extra globals allowed are numpy scalar/dtype
reconstructors (training scripts store metrics as numpy floats). Nothing else pickled is
ever executed.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from .config import DeRISConfig
from .errors import DerisError

log = logging.getLogger(__name__)

# --- key mapping ----------------------------------------------------------------------------

# Official tensors with no counterpart in our model, each with the reason.
DROPPED_KEYS: list[tuple[str, str]] = [
    # loss weight buffer of the training criterion that lives inside the (parameter-free) head
    (r"^head\.criterion\.empty_weight$", "training-only criterion buffer"),
    # BEiT-3 masked-image-modelling token: only used in pre-training
    (r"^understanding_branch\.vis_enc\.beit3\.vision_embed\.mask_token$", "pre-training mask token"),
    # Swin buffers recomputed from the window size (tests check they are identical)
    (r"\.attn\.relative_position_index$", "deterministic buffer, recomputed"),
    # decoder modules built but never used on the DeRIS forward path
    (r"^perception_branch\.predictor\.SEG_proj\.", "unused [SEG] projection"),
    (r"^perception_branch\.predictor\.Q2TCA\.\d+\.cross_attn\.mapmlp\.", "inactive (no cross mask is ever given)"),
    (r"^perception_branch\.nt_embed\.", "unused: existence comes from the cognition branch"),
    (r"^perception_branch\.perception_query_embed\.", "unused: queries come from the cognition branch"),
]

# Ordered (official pattern -> our replacement) rewrites; applied in sequence.
_RENAMES: list[tuple[str, str]] = [
    # cognition branch
    (r"^understanding_branch\.", "cognition."),
    (r"^cognition\.vis_enc\.beit3\.vision_embed\.proj\.", "cognition.beit3.patch_embed."),
    (r"^cognition\.vis_enc\.beit3\.vision_embed\.cls_token$", "cognition.beit3.cls_token"),
    (r"^cognition\.vis_enc\.beit3\.encoder\.embed_positions\.A\.", "cognition.beit3.vision_pos."),
    (r"^cognition\.vis_enc\.beit3\.encoder\.embed_positions\.B\.", "cognition.beit3.text_pos."),
    (r"^cognition\.vis_enc\.beit3\.encoder\.layer_norm\.", "cognition.beit3.final_norm."),
    (r"^cognition\.vis_enc\.beit3\.encoder\.layers\.", "cognition.beit3.layers."),
    (r"^cognition\.vis_enc\.beit3\.", "cognition.beit3."),
    (r"\.self_attn\.inner_attn_ln\.", ".attn.sub_norm."),
    (r"\.self_attn_layer_norm\.", ".attn_norm."),
    (r"(beit3\.layers\.\d+)\.self_attn\.", r"\1.attn."),
    (r"\.final_layer_norm\.", ".ffn_norm."),
    (r"\.ffn_layernorm\.", ".sub_norm."),
    (r"(beit3\..*)\.A\.", r"\1.vision."),
    (r"(beit3\..*)\.B\.", r"\1.text."),
    (r"^cognition\.vis_embed\.", "cognition.image_proj."),
    (r"^cognition\.text_embed\.", "cognition.text_proj."),
    (r"^cognition\.perception_embed\.", "cognition.query_proj."),
    (r"^cognition\.logit_embed\.", "cognition.class_embed."),
    (r"^cognition\.nt_embed\.", "cognition.existence_embed."),
    (r"^cognition\.roialigner\.TextCorrelation\.post_norm_layer\.", "cognition.text_correlation_norm."),
    (r"^cognition\.roialigner\.TextCorrelation\.layers\.", "cognition.text_correlation."),
    (r"(text_correlation\.\d+)\.attentions\.0\.attn\.", r"\1.self_attn."),
    (r"(text_correlation\.\d+)\.attentions\.1\.attn\.", r"\1.cross_attn."),
    (r"(text_correlation\.\d+)\.ffns\.0\.layers\.0\.0\.", r"\1.ffn.linear1."),
    (r"(text_correlation\.\d+)\.ffns\.0\.layers\.1\.", r"\1.ffn.linear2."),
    (r"(text_correlation\.\d+)\.norms\.0\.", r"\1.norm1."),
    (r"(text_correlation\.\d+)\.norms\.1\.", r"\1.norm2."),
    (r"(text_correlation\.\d+)\.norms\.2\.", r"\1.norm3."),
    # perception branch
    (r"^perception_branch\.hier_vision_encoder\.", "perception.backbone."),
    (r"^perception_branch\.pixel_decoder\.transformer\.level_embed$", "perception.pixel_decoder.level_embed"),
    (r"^perception_branch\.pixel_decoder\.transformer\.encoder\.layers\.", "perception.pixel_decoder.layers."),
    (r"^perception_branch\.pixel_decoder\.adapter_1\.", "perception.pixel_decoder.lateral."),
    (r"^perception_branch\.pixel_decoder\.layer_1\.", "perception.pixel_decoder.output."),
    (r"(pixel_decoder\.layers\.\d+)\.linear([12])\.", r"\1.ffn.linear\2."),
    (r"^perception_branch\.pixel_decoder\.", "perception.pixel_decoder."),
    (r"^perception_branch\.predictor\.transformer_cross_attention_layers\.(\d+)\.multihead_attn\.", r"perception.decoder.cross_attn.\1.attn."),
    (r"^perception_branch\.predictor\.transformer_cross_attention_layers\.", "perception.decoder.cross_attn."),
    (r"^perception_branch\.predictor\.transformer_self_attention_layers\.", "perception.decoder.self_attn."),
    (r"^perception_branch\.predictor\.transformer_ffn_layers\.(\d+)\.linear", r"perception.decoder.ffn.\1.ffn.linear"),
    (r"^perception_branch\.predictor\.transformer_ffn_layers\.", "perception.decoder.ffn."),
    (r"^perception_branch\.predictor\.query_SA\.(\d+)\.", r"perception.decoder.loopback.\1.mask_attn."),
    (r"^perception_branch\.predictor\.Q2TCA\.(\d+)\.", r"perception.decoder.loopback.\1.text_layer."),
    (r"^perception_branch\.predictor\.refer_proj\.(\d+)\.", r"perception.decoder.loopback.\1.proj."),
    (r"^perception_branch\.predictor\.query_embed\.", "perception.decoder.query_pos."),
    (r"^perception_branch\.predictor\.cls_embed\.", "perception.decoder.class_embed."),
    (r"^perception_branch\.predictor\.SEG_cls\.", "perception.decoder.refer_embed."),
    (r"^perception_branch\.predictor\.channel_proj_conv\.", "perception.decoder.fuse."),
    (r"^perception_branch\.predictor\.", "perception.decoder."),
]
_DROP_RE = [(re.compile(p), why) for p, why in DROPPED_KEYS]
_RENAME_RE = [(re.compile(p), r) for p, r in _RENAMES]


def official_key_to_ours(key: str) -> str | None:
    """Our name for one official key, or ``None`` when the key is deliberately dropped."""
    if key.startswith("module."):
        key = key[len("module.") :]
    if any(p.search(key) for p, _ in _DROP_RE):
        return None
    for pattern, repl in _RENAME_RE:
        key = pattern.sub(repl, key)
    return key


def convert_official_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an official DeRIS state dict to ours, dropping the keys in :data:`DROPPED_KEYS`."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        ours = official_key_to_ours(key)
        if ours is None:
            continue
        if ours in out:
            raise CheckpointError(f"two official keys map to {ours!r} (second: {key!r})")
        out[ours] = value
    return out


_U = "understanding_branch.vis_enc.beit3."
_P = "perception_branch."
# Ordered (our pattern -> official replacement) rewrites: the inverse of ``_RENAMES``, used to
# write checkpoints in the authors' layout (benchmarks, tests). A test checks the round trip.
_INVERSE: list[tuple[str, str]] = [
    (r"^cognition\.beit3\.patch_embed\.", _U + "vision_embed.proj."),
    (r"^cognition\.beit3\.cls_token$", _U + "vision_embed.cls_token"),
    (r"^cognition\.beit3\.vision_pos\.", _U + "encoder.embed_positions.A."),
    (r"^cognition\.beit3\.text_pos\.", _U + "encoder.embed_positions.B."),
    (r"^cognition\.beit3\.final_norm\.", _U + "encoder.layer_norm."),
    (r"^cognition\.beit3\.layers\.(\d+)\.attn\.sub_norm\.", _U + r"encoder.layers.\1.self_attn.inner_attn_ln."),
    (r"^cognition\.beit3\.layers\.(\d+)\.attn\.", _U + r"encoder.layers.\1.self_attn."),
    (r"^cognition\.beit3\.layers\.(\d+)\.attn_norm\.", _U + r"encoder.layers.\1.self_attn_layer_norm."),
    (r"^cognition\.beit3\.layers\.(\d+)\.ffn_norm\.", _U + r"encoder.layers.\1.final_layer_norm."),
    (r"^cognition\.beit3\.layers\.(\d+)\.ffn\.(vision|text)\.sub_norm\.", _U + r"encoder.layers.\1.ffn.\2.ffn_layernorm."),
    (r"^cognition\.beit3\.layers\.", _U + "encoder.layers."),
    (r"^(understanding_branch\.vis_enc\.beit3\.encoder\..*)\.vision\.", r"\1.A."),
    (r"^(understanding_branch\.vis_enc\.beit3\.encoder\..*)\.text\.", r"\1.B."),
    (r"^cognition\.beit3\.", _U),
    (r"^cognition\.image_proj\.", "understanding_branch.vis_embed."),
    (r"^cognition\.text_proj\.", "understanding_branch.text_embed."),
    (r"^cognition\.query_proj\.", "understanding_branch.perception_embed."),
    (r"^cognition\.class_embed\.", "understanding_branch.logit_embed."),
    (r"^cognition\.existence_embed\.", "understanding_branch.nt_embed."),
    (r"^cognition\.text_correlation_norm\.", "understanding_branch.roialigner.TextCorrelation.post_norm_layer."),
    (r"^cognition\.text_correlation\.(\d+)\.self_attn\.", r"understanding_branch.roialigner.TextCorrelation.layers.\1.attentions.0.attn."),
    (r"^cognition\.text_correlation\.(\d+)\.cross_attn\.", r"understanding_branch.roialigner.TextCorrelation.layers.\1.attentions.1.attn."),
    (r"^cognition\.text_correlation\.(\d+)\.ffn\.linear1\.", r"understanding_branch.roialigner.TextCorrelation.layers.\1.ffns.0.layers.0.0."),
    (r"^cognition\.text_correlation\.(\d+)\.ffn\.linear2\.", r"understanding_branch.roialigner.TextCorrelation.layers.\1.ffns.0.layers.1."),
    (r"^cognition\.text_correlation\.(\d+)\.norm1\.", r"understanding_branch.roialigner.TextCorrelation.layers.\1.norms.0."),
    (r"^cognition\.text_correlation\.(\d+)\.norm2\.", r"understanding_branch.roialigner.TextCorrelation.layers.\1.norms.1."),
    (r"^cognition\.text_correlation\.(\d+)\.norm3\.", r"understanding_branch.roialigner.TextCorrelation.layers.\1.norms.2."),
    (r"^cognition\.", "understanding_branch."),
    (r"^perception\.backbone\.", _P + "hier_vision_encoder."),
    (r"^perception\.pixel_decoder\.level_embed$", _P + "pixel_decoder.transformer.level_embed"),
    (r"^perception\.pixel_decoder\.layers\.(\d+)\.ffn\.linear", _P + r"pixel_decoder.transformer.encoder.layers.\1.linear"),
    (r"^perception\.pixel_decoder\.layers\.", _P + "pixel_decoder.transformer.encoder.layers."),
    (r"^perception\.pixel_decoder\.lateral\.", _P + "pixel_decoder.adapter_1."),
    (r"^perception\.pixel_decoder\.output\.", _P + "pixel_decoder.layer_1."),
    (r"^perception\.pixel_decoder\.", _P + "pixel_decoder."),
    (r"^perception\.decoder\.cross_attn\.(\d+)\.attn\.", _P + r"predictor.transformer_cross_attention_layers.\1.multihead_attn."),
    (r"^perception\.decoder\.cross_attn\.", _P + "predictor.transformer_cross_attention_layers."),
    (r"^perception\.decoder\.self_attn\.", _P + "predictor.transformer_self_attention_layers."),
    (r"^perception\.decoder\.ffn\.(\d+)\.ffn\.linear", _P + r"predictor.transformer_ffn_layers.\1.linear"),
    (r"^perception\.decoder\.ffn\.", _P + "predictor.transformer_ffn_layers."),
    (r"^perception\.decoder\.loopback\.(\d+)\.mask_attn\.", _P + r"predictor.query_SA.\1."),
    (r"^perception\.decoder\.loopback\.(\d+)\.text_layer\.", _P + r"predictor.Q2TCA.\1."),
    (r"^perception\.decoder\.loopback\.(\d+)\.proj\.", _P + r"predictor.refer_proj.\1."),
    (r"^perception\.decoder\.query_pos\.", _P + "predictor.query_embed."),
    (r"^perception\.decoder\.class_embed\.", _P + "predictor.cls_embed."),
    (r"^perception\.decoder\.refer_embed\.", _P + "predictor.SEG_cls."),
    (r"^perception\.decoder\.fuse\.", _P + "predictor.channel_proj_conv."),
    (r"^perception\.decoder\.", _P + "predictor."),
]
_INVERSE_RE = [(re.compile(p), r) for p, r in _INVERSE]


def ours_to_official_key(key: str) -> str:
    """The official name of one of our keys (inverse of :func:`official_key_to_ours`)."""
    for pattern, repl in _INVERSE_RE:
        key = pattern.sub(repl, key)
    return key


def to_official_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our state dict under the official key names (what a released ``.pth`` holds in ``state_dict``)."""
    out = {ours_to_official_key(k): v for k, v in state_dict.items()}
    out["head.criterion.empty_weight"] = torch.tensor([1.0, 0.1])
    return out


# --- loading --------------------------------------------------------------------------------


class CheckpointError(DerisError, ValueError):
    """A checkpoint that cannot be used, with a message that says why."""


def _numpy_safe_globals() -> list[Any]:
    allowed: list[Any] = [np.dtype]
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    allowed.append(scalar)
    for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType", "Float16DType"):
        if hasattr(np, "dtypes") and hasattr(np.dtypes, name):
            allowed.append(getattr(np.dtypes, name))
    return allowed


def safe_torch_load(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` allowing only numpy scalars besides tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types (unpickling, zip, IO); one clear line
        log.debug("loading %s failed", path, exc_info=True)
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"cannot load {path} safely: {msg}. Only tensors, plain containers and numpy scalars are accepted "
            "(no pickled code is executed); if this is a trusted official checkpoint that carries other objects, "
            "re-save its 'state_dict' alone."
        ) from None


def extract_state_dict(ckpt: Any, prefer_ema: bool = False) -> dict[str, Tensor]:
    """Pull the model weights out of a training checkpoint (``state_dict`` / ``ema_state_dict``)."""
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"checkpoint is a {type(ckpt).__name__}, expected a dict of tensors")
    order = ("ema_state_dict", "state_dict", "model") if prefer_ema else ("state_dict", "model", "ema_state_dict")
    for key in order:
        if key in ckpt and isinstance(ckpt[key], Mapping):
            ckpt = ckpt[key]
            break
    tensors = {k: v for k, v in ckpt.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError("checkpoint holds no tensors (expected 'state_dict' or a flat state dict)")
    return tensors


def _describe(keys: list[str], n: int = 5) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_into(model: torch.nn.Module, state: Mapping[str, Tensor], config_name: str, source: str,
              assign: bool = False) -> None:
    """Strictly load ``state`` (our names) into ``model``; name the first offenders on mismatch.

    ``assign=True`` makes the tensors the parameters (no copy: for meta-device models and
    memory-mapped files)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_describe(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_describe(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: {_describe(shapes, 3)}")
    if problems:
        raise CheckpointError(
            f"{source} does not fit config {config_name!r}: " + "; ".join(problems)
            + ". Is this a checkpoint of a different DeRIS variant?"
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True, assign=assign)


def load_official_checkpoint(model: torch.nn.Module, path: str | os.PathLike, prefer_ema: bool = False) -> None:
    """Load an official DeRIS ``.pth`` into our model (strict, through the key mapping)."""
    state = extract_state_dict(safe_torch_load(path), prefer_ema=prefer_ema)
    if not any(k.removeprefix("module.").startswith(("understanding_branch.", "perception_branch.")) for k in state):
        raise CheckpointError(f"{path} is not an official DeRIS checkpoint (no understanding_branch/perception_branch keys)")
    name = getattr(getattr(model, "cfg", None), "name", "?")
    load_into(model, convert_official_state_dict(state), name, str(path))


# --- our own format ------------------------------------------------------------------------------


def save_weights(model: torch.nn.Module, path: str | os.PathLike, cfg: DeRISConfig, extra: dict[str, str] | None = None) -> None:
    """Save weights as safetensors with the config JSON in the metadata (atomic write)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": "deris-studio", "config": cfg.to_json(), **(extra or {})}
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.chmod(tmp, 0o644)  # safetensors creates the file owner-only; weights are meant to be shared
        os.replace(tmp, path)  # an existing file is replaced only by a complete new one
    finally:
        tmp.unlink(missing_ok=True)


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, with a clear error for broken files."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights not found: {path}")
    try:
        tensors = {}
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
    except Exception as exc:  # noqa: BLE001 - safetensors raises many types on a bad file; one CheckpointError line, the traceback at DEBUG
        log.debug("reading %s failed", path, exc_info=True)
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from None
    return tensors, meta


def config_from_safetensors(path: str | os.PathLike) -> DeRISConfig | None:
    """The config stored in our safetensors metadata, if any."""
    _, meta = read_safetensors(path)
    if "config" not in meta:
        return None
    return DeRISConfig.from_dict(json.loads(meta["config"]))


def load_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load our safetensors weights strictly."""
    tensors, _ = read_safetensors(path)
    name = getattr(getattr(model, "cfg", None), "name", "?")
    load_into(model, tensors, name, str(path))
