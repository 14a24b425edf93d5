"""What the UI says about the loaded model, and the per-model defaults it starts with."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
SHAPES_DIR = ROOT / "assets" / "examples"  # synthetic shapes: what the bundled model knows
PHOTOS_DIR = ROOT / "assets" / "photos"  # real photos (scikit-image samples): for the official weights
FALLBACK_SCORE_THRESHOLD = 0.7
_DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def is_bundled(predictor: Any | None) -> bool:
    return predictor is None or (getattr(predictor, "source", "") or "bundled") == "bundled"  # unknown: as bundled


def score_threshold(predictor: Any | None) -> float:
    """The loaded model's own score threshold (its config), for the slider's start."""
    return float(getattr(predictor, "score_threshold", FALLBACK_SCORE_THRESHOLD)) if predictor else FALLBACK_SCORE_THRESHOLD


def runtime(predictor: Any | None) -> str:
    """``"cpu, bf16"``: where and in which precision the network runs."""
    if predictor is None:
        return "not loaded"
    device = getattr(predictor, "device", "cpu")
    precision = getattr(predictor, "precision", None)
    if precision is not None:
        return f"{getattr(device, 'type', device)}, {precision.name}"
    dtype = getattr(predictor, "dtype", torch.float32)
    return f"{getattr(device, 'type', device)}, {_DTYPE_NAMES.get(dtype, str(dtype).removeprefix('torch.'))}"


def precision_title(predictor: Any | None) -> str:
    """The kernels that run and why (the model line's tooltip), with the fallback note if any."""
    precision = getattr(predictor, "precision", None)
    if precision is None:
        return ""
    text = f"{precision.describe()}; asked {precision.requested}: {precision.reason}"
    return text + (f" ({precision.note})" if precision.note else "")


def model_line(description: str, predictor: Any | None, note: str = "") -> str:
    """The HTML line above the tabs: model, device and dtype, score threshold, and the note."""
    text = f"Model: {description} ({runtime(predictor)}"
    if predictor is not None:
        text += f", score threshold {score_threshold(predictor):g}"
    text += ")"
    precision = getattr(predictor, "precision", None)
    if precision is not None:
        text += f" · kernels: {precision.kernels}" + (f" — {precision.note}" if precision.note else "")
    text += f" — {note}" if note else ""
    title = precision_title(predictor)
    return (f"<span class='model-note' id='model-note' title='{html.escape(title, quote=True)}'>"
            f"{html.escape(text)}</span>")


def example_images(predictor: Any | None) -> list[Path]:
    """Real photos when official (or other real-data) weights run; the shapes with the bundled model."""
    folder = SHAPES_DIR if is_bundled(predictor) else PHOTOS_DIR
    return sorted(p for p in folder.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
