"""Our models on the Hugging Face Hub: ``save_pretrained`` / ``push_to_hub`` and their command line.

A repository (or folder) holds ``model.safetensors`` (weights, config in the metadata),
``config.json``, ``tokenizer.spm`` and a generated ``README.md`` model card that states the
training data and metrics when they are known (``train_config.json`` / ``log.jsonl`` of the
training run next to the weights). ``load_predictor("owner/name")`` and ``--weights owner/name``
load any such repository; ``load_predictor(folder)`` a saved folder.

    python -m deris_core.tools.share save runs/shapes/model.safetensors out/ [--tokenizer T]
    python -m deris_core.tools.share push runs/shapes/model.safetensors owner/name [--private]
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .checkpoint import save_weights
from .config import DeRISConfig
from .predictor import Predictor

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.spm"


def run_info(weights: Path) -> tuple[dict[str, Any], dict[str, float]]:
    """Training settings and the last evaluation of the run a weights file came from (if known)."""
    training: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    cfg_file = weights.with_name("train_config.json")
    if cfg_file.is_file():
        raw = json.loads(cfg_file.read_text())
        for key in ("data", "split", "epochs", "max_steps", "batch_size", "lr", "seed", "nsc_enabled", "loopback"):
            if raw.get(key) is not None:
                training[key] = Path(raw[key]).name if key == "data" else raw[key]  # no local paths
        if raw.get("eval_split"):
            training["eval_split"] = raw["eval_split"]
    log = weights.with_name("log.jsonl")
    if log.is_file():
        for line in log.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            found = {k: float(v) for k, v in record.items() if isinstance(v, (int, float)) and
                     any(k.endswith("_" + m) for m in ("gIoU", "cIoU", "N_acc", "T_acc"))}
            if found:
                metrics = found
    return training, metrics


def model_card(cfg: DeRISConfig, repo_id: str | None, training: dict[str, Any], metrics: dict[str, float]) -> str:
    """A README.md with Hub metadata (front matter) and what is known about the model."""
    name = repo_id or cfg.name
    lines = ["---", "library_name: deris-studio", "pipeline_tag: image-segmentation",
             "tags:", "- referring-image-segmentation", "- deris", "---", "", f"# {name}", "",
             f"A DeRIS referring-segmentation model (config `{cfg.name}`: BEiT-3 width {cfg.beit3.embed_dim}, "
             f"{cfg.beit3.depth} layers; Swin embed {cfg.swin.embed_dim}; {cfg.num_queries} queries; "
             f"{cfg.max_token} tokens), saved by DeRIS Studio.", "",
             "```python", "from deris_core.weights import load_predictor", "",
             f'predictor = load_predictor("{name}")',
             'pred = predictor.predict("the red circle", image=predictor.set_image("photo.jpg"))', "```", "",
             f"Default thresholds: score {cfg.postprocess.score_threshold}, mask {cfg.postprocess.mask_threshold}.", "",
             "## Training data", ""]
    if training:
        lines += [f"- {k}: {v}" for k, v in training.items()]
    else:
        lines.append("Not recorded (no `train_config.json` next to the weights).")
    lines += ["", "## Metrics", ""]
    if metrics:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v:.2f} |" for k, v in metrics.items()]
    else:
        lines.append("Not recorded (no evaluation in the training log).")
    return "\n".join(lines) + "\n"


def save_pretrained(
    predictor: Predictor,
    out_dir: str | Path,
    *,
    repo_id: str | None = None,
    training: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
) -> Path:
    """Write weights, config, tokenizer and model card into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = predictor.cfg
    save_weights(predictor.model, out / MODEL_FILE, cfg)
    (out / "config.json").write_text(cfg.to_json())
    tok = Path(predictor.tokenizer.model_file)
    if tok.resolve() != (out / TOKENIZER_FILE).resolve():
        shutil.copyfile(tok, out / TOKENIZER_FILE)
    (out / "README.md").write_text(model_card(cfg, repo_id, training or {}, metrics or {}))
    return out


def push_to_hub(predictor: Predictor, repo_id: str, *, private: bool = False, token: str | None = None,
                training: dict[str, Any] | None = None, metrics: dict[str, float] | None = None,
                commit_message: str = "Upload DeRIS Studio model") -> str:
    """Create ``repo_id`` if needed and upload the ``save_pretrained`` files; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(predictor, tmp, repo_id=repo_id, training=training, metrics=metrics)
        info = api.upload_folder(folder_path=tmp, repo_id=repo_id, commit_message=commit_message)
    return str(getattr(info, "commit_url", info))
