"""Start training from public pretrained encoders (when the user has them).

- ``beit3``: a BEiT-3 checkpoint from the authors of BEiT-3 (``beit3_base_patch16_224.pth``
  and friends; keys ``beit3.*`` under ``model``), loaded into the cognition encoder;
- ``swin``: a Mask2Former checkpoint with a Swin backbone (keys ``backbone.*`` and
  ``sem_seg_head.pixel_decoder.*``), loaded into the perception backbone and pixel decoder.

Keys are renamed to the official DeRIS names and then through the one official->ours map
(:func:`deris_core.checkpoint.official_key_to_ours`). Tensors whose shape differs (e.g. a
position table for another resolution) are skipped and reported. Files are read without
executing pickled code: ``.safetensors``, ``torch.load(weights_only=True)``, or the Mask2Former release's
``.pkl`` files through an unpickler that only rebuilds numpy arrays.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..checkpoint import CheckpointError, extract_state_dict, official_key_to_ours, read_safetensors, safe_torch_load

_NUMPY_OK = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("collections", "OrderedDict"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_OK:
            return super().find_class(module, name)
        raise CheckpointError(f"refusing to unpickle {module}.{name}: only numpy arrays are allowed")


def read_any(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"pretrained weights not found: {path}")
    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    if path.suffix == ".pkl":
        obj = _ArrayUnpickler(io.BytesIO(path.read_bytes())).load()
        state = obj.get("model", obj) if isinstance(obj, dict) else obj
        return {k: torch.from_numpy(np.asarray(v)) for k, v in state.items() if isinstance(v, np.ndarray)}
    return extract_state_dict(safe_torch_load(path))


def _official_name(key: str, kind: str) -> str | None:
    if kind == "beit3":
        key = key[len("model."):] if key.startswith("model.") else key
        if not key.startswith("beit3."):
            return None
        return "understanding_branch.vis_enc." + key
    if kind == "swin":
        if key.startswith("backbone."):
            return "perception_branch.hier_vision_encoder." + key[len("backbone."):]
        if key.startswith("sem_seg_head.pixel_decoder."):
            return "perception_branch.pixel_decoder." + key[len("sem_seg_head.pixel_decoder."):]
        return None
    raise ValueError(f"unknown pretrained kind {kind!r} (beit3 or swin)")


@dataclass
class PretrainedReport:
    kind: str
    loaded: int
    skipped_shape: list[str]
    unused: int

    def __str__(self) -> str:
        return (f"{self.kind}: {self.loaded} tensors loaded, {len(self.skipped_shape)} skipped for shape "
                f"({', '.join(self.skipped_shape[:3])}), {self.unused} unused")


def load_pretrained(model: nn.Module, path: str | Path, kind: str) -> PretrainedReport:
    """Copy matching tensors of a public checkpoint into ``model``; returns what happened."""
    state = read_any(path)
    ours = model.state_dict()
    loaded, skipped, unused = 0, [], 0
    with torch.no_grad():
        for key, value in state.items():
            official = _official_name(key, kind)
            name = official_key_to_ours(official) if official else None
            if name is None or name not in ours:
                unused += 1
                continue
            if tuple(ours[name].shape) != tuple(value.shape):
                skipped.append(name)
                continue
            ours[name].copy_(value.to(ours[name].dtype))
            loaded += 1
    if loaded == 0:
        raise CheckpointError(f"{path}: no tensor matches the {kind} part of this model (wrong file?)")
    return PretrainedReport(kind, loaded, skipped, unused)
