"""Fast starts: official ``.pth`` checkpoints converted once to memory-mapped safetensors.

The first load of an official checkpoint unpickles it (``torch.load(weights_only=True)``, no
pickled code runs), renames it to our layout and writes a safetensors copy into the cache
(``DERIS_CACHE``, default ``$XDG_CACHE_HOME/deris`` or ``~/.cache/deris``). Later loads
memory-map that copy: the model is built on the meta device (no random initialisation), and
the mapped tensors are assigned to it, so only the pages the forward pass touches are read.
The copy is keyed by the checkpoint's resolved path, size and modification time; a changed
checkpoint gets a new copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from . import env
from .checkpoint import CheckpointError, convert_official_state_dict, extract_state_dict, load_into, safe_torch_load
from .config import DeRISConfig
from .model import build_deris
from .model.deris import DeRIS
from .model.swin import WindowAttention, relative_position_index

log = logging.getLogger(__name__)

FORMAT = "deris-studio"


def cache_dir() -> Path:
    """Where converted checkpoints and downloaded tokenizers are kept."""
    if env.is_set("DERIS_CACHE"):
        return Path(env.get("DERIS_CACHE")).expanduser()
    base = env.filled("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "deris"


def converted_path(checkpoint: str | os.PathLike) -> Path:
    """The cache file for an official checkpoint (its resolved path, size and mtime)."""
    real = Path(checkpoint).resolve()
    st = real.stat()
    key = hashlib.sha1(f"{real}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:20]
    return cache_dir() / "converted" / f"{real.stem}-{key}.safetensors"


def materialize_buffers(model: torch.nn.Module) -> None:
    """Recompute the non-persistent buffers a meta-device build leaves empty."""
    for module in model.modules():
        if isinstance(module, WindowAttention) and module.relative_position_index.is_meta:
            module.relative_position_index = relative_position_index(module.window)
    left = [name for name, b in model.named_buffers() if b.is_meta]
    if left:  # pragma: no cover - a new non-persistent buffer needs a line above
        raise RuntimeError(f"buffers left on the meta device: {left[:3]}")


def model_from_safetensors(path: str | os.PathLike, cfg: DeRISConfig, int8: bool = False) -> DeRIS:
    """Build ``cfg`` and assign the memory-mapped tensors of our safetensors file (strict).

    ``int8``: the linear layers that int8 quantizes are read one at a time and quantized as they
    come (:func:`_int8_from_safetensors`), so their float weights are never all in memory."""
    from safetensors.torch import load_file

    path = Path(path)
    if int8:
        return _int8_from_safetensors(path, cfg)
    try:
        tensors = load_file(str(path))  # memory-mapped
    except Exception as exc:  # noqa: BLE001 - safetensors raises many types on a bad file; one CheckpointError line, the traceback at DEBUG
        log.debug("reading %s failed", path, exc_info=True)
        raise CheckpointError(f"{path.name} is not a readable safetensors file: {exc}") from None
    model = build_deris(cfg, device="meta")
    expected = model.state_dict()
    wrong = [k for k in expected if k in tensors and tensors[k].dtype != expected[k].dtype]
    if wrong:
        tensors = {k: v.to(expected[k].dtype) if k in wrong else v for k, v in tensors.items()}
    load_into(model, tensors, cfg.name, path.name, assign=True)
    materialize_buffers(model)
    return model.eval()


def _int8_from_safetensors(path: Path, cfg: DeRISConfig) -> DeRIS:
    """The model with int8 linear weights, each read from the file by its byte range (plain reads,
    no mapping that would keep every page resident) and quantized at once; the rest assigned, and
    the vocabulary table quantized as soon as it is in."""
    from safetensors import safe_open

    from .model.layers import Embedding, int8_layers

    model = build_deris(cfg, device="meta")
    targets = int8_layers(model)
    quantized = {f"{name}.weight" for name, _ in targets}
    try:
        with safe_open(str(path), framework="pt") as f:  # validates the header and the offsets first
            rest = {k: f.get_tensor(k) for k in f.keys() if k not in quantized}
        with open(path, "rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(size))
    except Exception as exc:  # noqa: BLE001 - safetensors raises many types on a bad file; one CheckpointError line, the traceback at DEBUG
        log.debug("reading %s failed", path, exc_info=True)
        raise CheckpointError(f"{path.name} is not a readable safetensors file: {exc}") from None
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(rest) - quantized), sorted(set(rest) - expected)
    absent = sorted(k for k in quantized if k not in header)
    if missing or unexpected or absent:
        raise CheckpointError(f"{path.name} does not fit {cfg.name}: missing {(missing + absent)[:3]}, "
                              f"unexpected {unexpected[:3]}")
    model.load_state_dict(rest, strict=False, assign=True)
    del rest
    for m in model.modules():
        if isinstance(m, Embedding):
            m.quantize_int8_()  # the vocabulary: int8 rows, the float table freed
    base = 8 + size
    with open(path, "rb") as fh:
        for name, m in targets:
            info = header[f"{name}.weight"]
            start, end = info["data_offsets"]
            if info["dtype"] != "F32" or tuple(info["shape"]) != (m.out_features, m.in_features):
                raise CheckpointError(f"{path.name}: {name}.weight is {info['dtype']} {info['shape']}, "
                                      f"expected F32 {[m.out_features, m.in_features]}")
            fh.seek(base + start)
            data = bytearray(fh.read(end - start))
            m.weight = torch.nn.Parameter(torch.frombuffer(data, dtype=torch.float32).view(m.out_features, m.in_features),
                                          requires_grad=False)
            m.quantize_int8_()  # frees the float weight
    materialize_buffers(model)
    return model.eval()


def write_converted(state: dict[str, torch.Tensor], cfg: DeRISConfig, out: Path, source: str) -> None:
    """Write our-layout tensors as safetensors (atomic), with the config in the metadata."""
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    meta = {"format": FORMAT, "config": cfg.to_json(), "source": source}
    try:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata=meta)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def load_official(path: str | os.PathLike, cfg: DeRISConfig | None, infer,
                  int8: bool = False) -> tuple[DeRIS, DeRISConfig, bool]:
    """``(model, config, from_cache)`` for an official ``.pth``, using and filling the cache.

    ``infer(state)`` picks the config when ``cfg`` is None. A cache that cannot be written
    (read-only disk) only costs speed. ``int8``: a cached copy is read with its linear layers
    quantized as they come (the first start unpickles the whole ``.pth`` in float anyway).
    """
    path = Path(path)
    cached = converted_path(path)
    if cached.is_file():
        try:
            from safetensors import safe_open

            with safe_open(str(cached), framework="pt") as f:
                meta = f.metadata() or {}
            use = cfg or DeRISConfig.from_dict(json.loads(meta["config"]))  # a given config wins (thresholds)
            return model_from_safetensors(cached, use, int8=int8), use, True
        except Exception:  # noqa: BLE001 - a broken or mismatching cache file is rebuilt below
            with contextlib.suppress(OSError):
                cached.unlink(missing_ok=True)
    state = extract_state_dict(safe_torch_load(path))
    cfg = cfg or infer(state)
    ours = convert_official_state_dict(state)
    del state
    model = build_deris(cfg, device="meta")
    load_into(model, ours, cfg.name, path.name, assign=True)
    materialize_buffers(model)
    with contextlib.suppress(Exception):  # a read-only or full disk only costs speed next time
        write_converted(ours, cfg, cached, path.name)
    return model.eval(), cfg, False
