"""From "I have a model name or a file" to a ready :class:`Predictor`.

``load_predictor`` accepts:

- one of the four published names (``deris-b-grefcoco`` ...): the checkpoint is fetched from
  the authors' Hugging Face repository through ``huggingface_hub`` (cached; the file names are
  configurable), the BEiT-3 tokenizer is found as :mod:`deris_core.tokenizer_source` says;
- a local official ``.pth`` (config inferred from its tensor shapes or given); the tokenizer
  likewise. Official checkpoints are converted once to a memory-mapped safetensors copy
  (:mod:`deris_core.weight_cache`);
- one of our ``.safetensors`` files (the config is in its metadata; the tokenizer defaults
  to ``tokenizer.spm`` next to it), a ``save_pretrained`` folder, or a Hub repository
  ``owner/name`` made by ``push_to_hub`` (:mod:`deris_core.sharing`);
- ``"bundled"`` (or nothing): the small model shipped in ``assets/bundled/``.

Any missing file yields one :class:`WeightsError` that says which file, where it was looked
for and how to provide it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from . import env
from .checkpoint import CheckpointError, config_from_safetensors
from .config import OFFICIAL_NAMES, DeRISConfig, get_config
from .errors import DerisError
from .hardware import choose_precision, resolve_device
from .hub import HubError, download, looks_like_repo_id, snapshot
from .model.deris import DeRIS
from .predictor import Predictor
from .tokenizer import BEiT3Tokenizer
from .tokenizer_source import TokenizerSourceError, resolve_tokenizer
from .weight_cache import load_official, model_from_safetensors

log = logging.getLogger(__name__)

HF_REPO = env.get("DERIS_HF_REPO")
# File names inside the hub repository (not verifiable from here: override with
# DERIS_HF_FILE_<NAME> environment variables, e.g. DERIS_HF_FILE_DERIS_L_GREFCOCO=...).
HF_FILES = {
    "deris-b-grefcoco": "DeRIS-B-grefcoco.pth",
    "deris-l-grefcoco": "DeRIS-L-grefcoco.pth",
    "deris-b-refcoco": "DeRIS-B-refcoco.pth",
    "deris-l-refcoco": "DeRIS-L-refcoco.pth",
}
# Our own format on the Hub (save_pretrained / push_to_hub): the files a repository holds.
MODEL_FILE = "model.safetensors"
REPO_FILES = [MODEL_FILE, "config.json", "tokenizer.spm", "README.md"]
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "assets" / "bundled"


class WeightsError(DerisError, FileNotFoundError):
    """Weights or tokenizer that cannot be found or used."""


@dataclass
class ResolvedWeights:
    kind: str  # "official", "safetensors"
    weights: Path
    tokenizer: Path | None  # None: resolved after loading (official checkpoints, see tokenizer_source)
    config: DeRISConfig | None
    description: str
    hub_repo: str | None = None  # where an official checkpoint's tokenizer may also be found


def hf_filename(name: str) -> str:
    return env.get("DERIS_HF_FILE_" + name.upper().replace("-", "_"), HF_FILES[name])


def _hf_download(filename: str, what: str, name: str) -> Path:
    try:
        return download(HF_REPO, filename)
    except HubError as exc:
        raise WeightsError(
            f"{what} for {name!r} is missing: {exc}. Download it yourself and pass a local path "
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


def _tokenizer_next_to(weights: Path, tokenizer: str | os.PathLike | None) -> Path:
    tok = Path(tokenizer) if tokenizer else weights.with_name("tokenizer.spm")
    if not tok.is_file():
        raise WeightsError(f"tokenizer missing: looked for {tok.name} next to {weights.name}; "
                           "pass --tokenizer PATH to a sentencepiece model")
    return tok


def _ours(path: Path, tokenizer: str | os.PathLike | None, config: str | None, description: str) -> ResolvedWeights:
    cfg = config_from_safetensors(path)
    if cfg is None:
        if config is None:
            raise WeightsError(f"{path.name} has no DeRIS config in its metadata; pass config=NAME")
        cfg = get_config(config)
    return ResolvedWeights("safetensors", path, _tokenizer_next_to(path, tokenizer), cfg, description)


def resolve(weights: str | os.PathLike | None = None, tokenizer: str | os.PathLike | None = None, config: str | None = None) -> ResolvedWeights:
    """Find the files for ``weights`` (see the module docstring)."""
    if weights is None or str(weights) == "bundled":
        w = BUNDLED_DIR / "model.safetensors"
        tok = Path(tokenizer) if tokenizer else BUNDLED_DIR / "tokenizer.spm"
        if not w.is_file():
            raise WeightsError(
                "the bundled model is missing: assets/bundled/model.safetensors does not exist. Reinstall the project "
                "(it ships in assets/), or pass official weights with --weights NAME|PATH."
            )
        if not tok.is_file():
            raise WeightsError("the bundled tokenizer is missing: assets/bundled/tokenizer.spm does not exist")
        cfg = config_from_safetensors(w)
        return ResolvedWeights("safetensors", w, tok, cfg, "bundled synthetic-data model (not the official weights)")
    key = str(weights).lower()
    if key in OFFICIAL_NAMES:
        w = _hf_download(hf_filename(key), "the checkpoint", key)
        return ResolvedWeights("official", w, Path(tokenizer) if tokenizer else None, get_config(config or key),
                               f"official {OFFICIAL_NAMES[key]}", hub_repo=HF_REPO)
    path = Path(weights)
    if path.is_dir() and (path / MODEL_FILE).is_file():  # a save_pretrained folder
        return _ours(path / MODEL_FILE, tokenizer, config, f"weights {path.name}")
    if not path.exists() and looks_like_repo_id(str(weights)):
        try:
            folder = snapshot(str(weights), REPO_FILES)
        except HubError as exc:
            raise WeightsError(f"{exc}. Give a published name ({', '.join(sorted(OFFICIAL_NAMES))}), a local file, "
                               "or a Hub repository made with push_to_hub") from None
        if not (folder / MODEL_FILE).is_file():
            raise WeightsError(f"the Hugging Face repository '{weights}' has no {MODEL_FILE}: it is not a DeRIS "
                               "Studio model (official checkpoints load by their published names)")
        return _ours(folder / MODEL_FILE, tokenizer, config, f"{weights} (Hugging Face Hub)")
    if not path.is_file():
        raise WeightsError(
            f"weights not found: {path.name} is neither a file nor a published model name "
            f"({', '.join(sorted(OFFICIAL_NAMES))}, bundled) nor a Hub repository (owner/name)"
        )
    if path.suffix == ".safetensors":
        return _ours(path, tokenizer, config, f"weights {path.name}")
    return ResolvedWeights("official", path, Path(tokenizer) if tokenizer else None, get_config(config) if config else None,
                           f"official checkpoint {path.name}", hub_repo=HF_REPO)


def pick_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA, else Apple's MPS, else the CPU (:func:`deris_core.hardware.resolve_device`)."""
    try:
        return resolve_device(device)
    except RuntimeError as exc:
        raise WeightsError(str(exc)) from None


def load_predictor(
    weights: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
    *,
    config: str | None = None,
    device: str = "auto",
    dtype: str | None = None,
) -> Predictor:
    """Build a :class:`Predictor` from a published name, a local file, or the bundled model.

    ``dtype``: ``auto`` (the default, also from ``DERIS_DTYPE``): bf16 where the device computes
    it natively (CUDA, CPUs with AVX-512 BF16 / AMX / ARM BF16), int8 linear layers on other x86
    CPUs, else fp32; ``fp32`` matches the official outputs to 1e-4; ``bf16``/``int8`` where they
    cannot run fall back and log why (:func:`deris_core.hardware.choose_precision`).
    ``predictor.precision`` says what ran.
    """
    dev = pick_device(device)
    precision = choose_precision(dtype, dev)
    if precision.note:
        log.warning(precision.note)
    torch_dtype = precision.dtype
    res = resolve(weights, tokenizer, config)
    if res.kind == "official":
        model, cfg, _ = load_official(res.weights, res.config, infer_official_config, int8=precision.int8)
        tok_path = _official_tokenizer(res, model.cognition.beit3.text_embed.num_embeddings)
    else:
        cfg = res.config
        model = model_from_safetensors(res.weights, cfg, int8=precision.int8)
        tok_path = res.tokenizer
    if torch_dtype != torch.float32:
        model = model.to(torch_dtype)  # the whole network in bf16 (the cached copy stays fp32)
    tok = BEiT3Tokenizer(tok_path, max_token=cfg.max_token)
    predictor = Predictor(model, tok, device=dev, dtype=torch_dtype, precision=precision)
    predictor.description = res.description
    bundled = res.weights.resolve().parent == BUNDLED_DIR
    predictor.source = "bundled" if bundled else str(weights)
    predictor.weights_file = res.weights
    return predictor


def _official_tokenizer(res: ResolvedWeights, rows: int) -> Path:
    """The tokenizer of an official checkpoint with ``rows`` vocabulary rows (found as docs/weights.md says)."""
    try:
        return Path(resolve_tokenizer(res.tokenizer, checkpoint=res.weights, vocab_rows=rows,
                                      hub_repo=res.hub_repo, what=res.description))
    except TokenizerSourceError as exc:
        raise WeightsError(str(exc)) from None


def load_trainable(weights: str | os.PathLike | None = None, tokenizer: str | os.PathLike | None = None, *,
                   config: str | None = None) -> tuple[DeRIS, Path, ResolvedWeights]:
    """``(model, tokenizer file, where they came from)`` for fine-tuning: any weights
    :func:`load_predictor` takes, as a float32 CPU model in training mode whose tensors are its own
    (not the memory-mapped file's), never packed or quantized."""
    from .model import build_deris

    res = resolve(weights, tokenizer, config)
    if res.kind == "official":
        mapped, cfg, _ = load_official(res.weights, res.config, infer_official_config)
        tok_path = _official_tokenizer(res, mapped.cognition.beit3.text_embed.num_embeddings)
    else:
        cfg, tok_path = res.config, res.tokenizer
        mapped = model_from_safetensors(res.weights, cfg)
    model = build_deris(cfg)
    model.load_state_dict({k: v.float() for k, v in mapped.state_dict().items()}, strict=True)  # copies
    del mapped
    return model.train(), Path(tok_path), res
