"""From "I have a model name or a file" to a ready :class:`Predictor`.

``load_predictor`` accepts:

- one of the four published names (``deris-b-grefcoco`` ...): the checkpoint and the BEiT-3
  sentencepiece model are fetched from the authors' Hugging Face repository through
  ``huggingface_hub`` (cached; the file names are configurable because the hub is not
  reachable from every machine);
- a local official ``.pth`` (config inferred from its tensor shapes or given) plus a tokenizer;
- one of our ``.safetensors`` files (the config is in its metadata; the tokenizer defaults
  to ``tokenizer.spm`` next to it);
- ``"bundled"`` (or nothing): the small model shipped in ``assets/bundled/``.

Any missing file yields one :class:`WeightsError` that says which file, where it was looked
for and how to provide it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import (
    CheckpointError,
    config_from_safetensors,
    convert_official_state_dict,
    extract_state_dict,
    load_into,
    load_weights,
    safe_torch_load,
)
from .config import OFFICIAL_NAMES, DeRISConfig, get_config
from .model import build_deris
from .predictor import Predictor
from .tokenizer import BEiT3Tokenizer

HF_REPO = os.environ.get("DERIS_HF_REPO", "Dmmm997/DeRIS")
# File names inside the hub repository (not verifiable from here: override with
# DERIS_HF_FILE_<NAME> environment variables, e.g. DERIS_HF_FILE_DERIS_L_GREFCOCO=...).
HF_FILES = {
    "deris-b-grefcoco": "DeRIS-B-grefcoco.pth",
    "deris-l-grefcoco": "DeRIS-L-grefcoco.pth",
    "deris-b-refcoco": "DeRIS-B-refcoco.pth",
    "deris-l-refcoco": "DeRIS-L-refcoco.pth",
}
HF_TOKENIZER_FILE = os.environ.get("DERIS_HF_TOKENIZER_FILE", "beit3.spm")
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "assets" / "bundled"


class WeightsError(FileNotFoundError):
    """Weights or tokenizer that cannot be found or used."""


@dataclass
class ResolvedWeights:
    kind: str  # "official", "safetensors"
    weights: Path
    tokenizer: Path
    config: DeRISConfig
    description: str


def hf_filename(name: str) -> str:
    env = "DERIS_HF_FILE_" + name.upper().replace("-", "_")
    return os.environ.get(env, HF_FILES[name])


def _hf_download(filename: str, what: str, name: str) -> Path:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover
        raise WeightsError("huggingface_hub is not installed: pip install huggingface_hub") from None
    try:
        # HF_HUB_OFFLINE is honoured at call time too (huggingface_hub reads it once, at import)
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        return Path(hf_hub_download(HF_REPO, filename, local_files_only=offline))
    except Exception as exc:  # noqa: BLE001 - offline, missing file, auth: all end here
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"{what} for {name!r} is missing: could not get '{filename}' from the Hugging Face repository "
            f"'{HF_REPO}' (nor from the local hub cache): {reason}. Download it yourself and pass a local path "
            f"(--weights PATH --tokenizer PATH), or set DERIS_HF_REPO / DERIS_HF_FILE_* if the repository "
            f"uses other names."
        ) from None


def infer_official_config(state: dict[str, torch.Tensor]) -> DeRISConfig:
    """Pick the published config whose shapes match an official state dict."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    text_key = "understanding_branch.vis_enc.beit3.text_embed.weight"
    query_key = "understanding_branch.init_query.weight"
    for key in (text_key, query_key):
        if key not in state:
            sample = ", ".join(list(state)[:3]) or "none"
            raise CheckpointError(f"not an official DeRIS checkpoint: it has no {key!r} ({len(state)} tensors; "
                                  f"first keys: {sample}). Pass a released DeRIS .pth or one of our .safetensors files.")
    width = state[text_key].shape[1]
    queries = state[query_key].shape[0]
    size = {768: "b", 1024: "l"}.get(width)
    data = {20: "grefcoco", 10: "refcoco"}.get(queries)
    if size is None or data is None:
        raise WeightsError(f"cannot tell the config of this checkpoint (width {width}, {queries} queries); pass config=")
    return get_config(f"deris-{size}-{data}")


def resolve(weights: str | os.PathLike | None = None, tokenizer: str | os.PathLike | None = None, config: str | None = None) -> ResolvedWeights:
    """Find the files for ``weights`` (see the module docstring)."""
    if weights is None or str(weights) == "bundled":
        w = BUNDLED_DIR / "model.safetensors"
        tok = Path(tokenizer) if tokenizer else BUNDLED_DIR / "tokenizer.spm"
        if not w.is_file():
            raise WeightsError(
                f"the bundled model is missing: {w} does not exist. Reinstall the project (it ships in assets/), "
                "or pass official weights with --weights NAME|PATH."
            )
        if not tok.is_file():
            raise WeightsError(f"the bundled tokenizer is missing: {tok} does not exist")
        cfg = config_from_safetensors(w)
        return ResolvedWeights("safetensors", w, tok, cfg, "bundled synthetic-data model (not the official weights)")
    key = str(weights).lower()
    if key in OFFICIAL_NAMES:
        w = _hf_download(hf_filename(key), "the checkpoint", key)
        tok = Path(tokenizer) if tokenizer else _hf_download(HF_TOKENIZER_FILE, "the BEiT-3 tokenizer (beit3.spm)", key)
        return ResolvedWeights("official", w, tok, get_config(config or key), f"official {OFFICIAL_NAMES[key]}")
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(
            f"weights not found: {path} is neither a file nor a published model name "
            f"({', '.join(sorted(OFFICIAL_NAMES))}, bundled)"
        )
    if path.suffix == ".safetensors":
        cfg = config_from_safetensors(path)
        if cfg is None:
            if config is None:
                raise WeightsError(f"{path} has no DeRIS config in its metadata; pass config=NAME")
            cfg = get_config(config)
        tok = Path(tokenizer) if tokenizer else path.with_name("tokenizer.spm")
        if not tok.is_file():
            raise WeightsError(f"tokenizer missing: looked for {tok}; pass --tokenizer PATH to a sentencepiece model")
        return ResolvedWeights("safetensors", path, tok, cfg, f"weights {path.name}")
    if tokenizer is None:
        tok = path.with_name("beit3.spm")
        if not tok.is_file():
            raise WeightsError(f"tokenizer missing: looked for {tok}; pass --tokenizer PATH to beit3.spm")
    else:
        tok = Path(tokenizer)
    return ResolvedWeights("official", path, tok, get_config(config) if config else None, f"official checkpoint {path.name}")  # type: ignore[arg-type]


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise WeightsError("device 'cuda' was requested but no CUDA GPU is available")
    return torch.device(device)


DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def load_predictor(
    weights: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
    *,
    config: str | None = None,
    device: str = "auto",
    dtype: str = "fp32",
) -> Predictor:
    """Build a :class:`Predictor` from a published name, a local file, or the bundled model.

    ``dtype``: ``fp32`` (default; matches the official outputs to 1e-4) or ``bf16`` (weights
    and activations in bfloat16 on CPU and CUDA: about half the memory and 1.5-2x faster on
    CPUs with ``avx512_bf16``; its agreement with fp32 is measured in the README).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    dev = pick_device(device)
    torch_dtype = DTYPES[dtype]
    res = resolve(weights, tokenizer, config)
    if res.kind == "official":
        state = extract_state_dict(safe_torch_load(res.weights))
        cfg = res.config or infer_official_config(state)
        model = build_deris(cfg, dtype=torch_dtype)
        load_into(model, convert_official_state_dict(state), cfg.name, str(res.weights))
        del state
    else:
        cfg = res.config
        model = build_deris(cfg, dtype=torch_dtype)
        load_weights(model, res.weights)
    tok = BEiT3Tokenizer(res.tokenizer, max_token=cfg.max_token)
    predictor = Predictor(model, tok, device=dev, dtype=torch_dtype)
    predictor.description = res.description  # type: ignore[attr-defined]
    return predictor
