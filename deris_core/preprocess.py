"""Image loading and the official pre-processing.

Official pipeline (mmcv): decode to uint8 BGR; resize *without keeping the aspect ratio* to
384x384 (Swin) and 224x224 (BEiT-3) with OpenCV INTER_LINEAR on the uint8 image; convert
to float32, BGR->RGB, subtract the ImageNet mean and multiply by 1/std (computed in
float64); HWC->CHW. We reproduce it with the same OpenCV calls.

Loading is defensive: paths, PIL images and arrays; EXIF orientation; greyscale, palette,
RGBA/LA (composited on white), CMYK, 16-bit and float images; animated files (first frame);
decompression bombs and absurd sizes are refused with :class:`ImageError`.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DerisError

log = logging.getLogger(__name__)

MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)
MAX_PIXELS = 64_000_000  # refuse larger images (decompression-bomb guard)
MAX_ASPECT = 1000

ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]


class ImageError(DerisError, ValueError):
    """An image that cannot be used, with a message that names the problem."""


@dataclass
class Preprocessed:
    image: torch.Tensor  # [1, 3, S, S] normalised (Swin view)
    image_mini: torch.Tensor  # [1, 3, s, s] normalised (BEiT-3 view)
    original_size: tuple[int, int]  # (H, W)
    scale_factor: tuple[float, float, float, float]  # official (w, h, w, h) scale


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        top = 65535 if arr.max(initial=0) > 255 else 255
        return np.clip(np.round(arr.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageError("image contains NaN or infinite values")
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        return np.clip(np.round(arr * scale), 0, 255).astype(np.uint8)
    raise ImageError(f"unsupported image dtype {arr.dtype}")


def _check_size(h: int, w: int) -> None:
    if h < 1 or w < 1:
        raise ImageError(f"image is empty ({w}x{h})")
    if h * w > MAX_PIXELS:
        raise ImageError(f"image is too large ({w}x{h} = {h * w / 1e6:.0f} MP; the limit is {MAX_PIXELS / 1e6:.0f} MP)")
    if max(h, w) / min(h, w) > MAX_ASPECT:
        raise ImageError(f"image aspect ratio {w}x{h} is too extreme (more than {MAX_ASPECT}:1)")


def _array_to_rgb(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ImageError(f"expected an HxW or HxWxC image array, got shape {arr.shape}")
    _check_size(arr.shape[0], arr.shape[1])
    arr = _to_uint8(arr)
    c = arr.shape[2]
    if c == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif c == 4:
        alpha = arr[:, :, 3:4].astype(np.float32) / 255.0
        arr = np.round(arr[:, :, :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
    elif c != 3:
        raise ImageError(f"expected 1, 3 or 4 channels, got {c}")
    return np.ascontiguousarray(arr)


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    w, h = img.size
    _check_size(h, w)
    try:
        img.seek(0)  # first frame of animated images
    except (EOFError, AttributeError, ValueError):
        pass
    try:
        img = ImageOps.exif_transpose(img) or img
    except Exception:  # noqa: BLE001 - broken EXIF (any of PIL's parse errors) must not block the image
        log.debug("EXIF orientation ignored", exc_info=True)
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _array_to_rgb(np.asarray(img))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        return _array_to_rgb(np.asarray(img))
    if mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img))


def load_image(source: ImageInput) -> np.ndarray:
    """Return an RGB uint8 ``HxWx3`` array from a path, bytes, PIL image or array."""
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source)
    if isinstance(source, Image.Image):
        return _pil_to_rgb(source)
    if isinstance(source, (bytes, bytearray)):
        stream: io.BytesIO | Path = io.BytesIO(source)
        label = "image bytes"
    elif isinstance(source, (str, os.PathLike)):
        stream = Path(source)
        label = str(source)
        if not stream.is_file():
            raise ImageError(f"image file not found: {label}")
        if stream.stat().st_size == 0:
            raise ImageError(f"image file is empty: {label}")
    else:
        raise ImageError(f"unsupported image input of type {type(source).__name__}")
    try:
        # Image.open reads only the header; the size check runs before any pixel is decoded.
        with Image.open(stream) as img:
            w, h = img.size
            _check_size(h, w)
            img.load()
            return _pil_to_rgb(img)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"{label} declares too many pixels (decompression-bomb guard, limit {MAX_PIXELS / 1e6:.0f} MP)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{label} is not a recognised image file (corrupt or unsupported format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{label} could not be decoded (truncated or corrupt): {exc}") from None


def normalize_bgr(bgr: np.ndarray) -> np.ndarray:
    """mmcv ``imnormalize(to_rgb=True)``: float32, BGR->RGB, ``(x - mean) * (1 / std)``."""
    img = bgr.astype(np.float32)
    mean = np.float64(MEAN.reshape(1, -1))
    stdinv = 1 / np.float64(STD.reshape(1, -1))
    cv2.cvtColor(img, cv2.COLOR_BGR2RGB, img)
    cv2.subtract(img, mean, img)
    cv2.multiply(img, stdinv, img)
    return img


def preprocess(rgb: np.ndarray, size: int = 384, mini_size: int = 224) -> Preprocessed:
    """The official pre-processing of one RGB uint8 image into the two normalised views."""
    h, w = rgb.shape[:2]
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])

    def view(s: int) -> torch.Tensor:
        resized = cv2.resize(bgr, (s, s), interpolation=cv2.INTER_LINEAR)
        return torch.from_numpy(normalize_bgr(resized).transpose(2, 0, 1).copy())[None]

    sf = (size / w, size / h, size / w, size / h)
    scale = tuple(float(np.float32(v)) for v in sf)
    return Preprocessed(view(size), view(mini_size), (h, w), scale)  # type: ignore[arg-type]


def normalize(rgb: np.ndarray) -> torch.Tensor:
    """An RGB uint8 view already at network size -> normalised ``[1, 3, H, W]`` (as :func:`preprocess`)."""
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    return torch.from_numpy(normalize_bgr(bgr).transpose(2, 0, 1).copy())[None]
