"""SAM through ``transformers`` (``SamModel`` / ``SamProcessor``): points, a box and a prior mask to masks.

The image embedding is computed once per image (``get_image_embeddings``) and kept; each click
runs only the prompt encoder and the mask decoder on it. Weights come from a local folder or a
Hub repository (``facebook/sam-vit-base``), downloaded once into the Hugging Face cache through
:mod:`deris_core.hub` (one-line errors, bounded waits, the cache when the Hub does not answer).
Precision follows :func:`deris_core.hardware.choose_precision`: bf16 on CUDA and on CPUs that
compute it natively, else fp32 (int8 is not offered for SAM: fp32 then).

Coordinates: prompts are in the original image's pixels. The processor resizes the long side to
``longest_edge`` (1024) and pads bottom/right; a point (x, y) becomes (x * w'/w, y * h'/h) with
(h', w') the resized size (:func:`to_input`), and the decoder's low-resolution masks are upsampled
to the padded square, cropped to (h', w') and resized to (h, w) (:func:`to_original`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from .base import RefineResult, StateCache, check_image, check_prompts, empty_result, image_key

log = logging.getLogger(__name__)

PRIOR_LOGIT = 8.0  # a binary prior mask as SAM's mask input: +8 inside, -8 outside (its logits' scale)


class SamUnavailable(UserError, RuntimeError):
    """SAM cannot be loaded here (no transformers, no weights, offline): one line saying why, for the
    operator to act on (a :class:`~app.errors.UserError`; ``RuntimeError`` kept for older callers)."""


@dataclass(frozen=True)
class SamState:
    """One image: its size, the resized size the model saw, and the cached image embedding."""

    key: str
    size: tuple[int, int]  # original (H, W)
    input_size: tuple[int, int]  # after resizing the long side to ``longest`` (h', w')
    longest: int
    embeddings: torch.Tensor = field(repr=False)
    timings: dict[str, float] = field(default_factory=dict)


def resized_size(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """(h', w') after scaling the long side of (h, w) to ``longest`` (SAM's rounding: int(x + 0.5))."""
    h, w = size
    scale = longest / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def to_input(xy: np.ndarray, size: tuple[int, int], input_size: tuple[int, int]) -> np.ndarray:
    """Original-pixel (x, y) pairs (``[..., 2]``) to the model's input frame (as ``SamProcessor`` scales them)."""
    (h, w), (hi, wi) = size, input_size
    out = np.asarray(xy, np.float64).copy()
    out[..., 0] *= wi / w
    out[..., 1] *= hi / h
    return out


def to_original(low_res: torch.Tensor, size: tuple[int, int], input_size: tuple[int, int], longest: int) -> torch.Tensor:
    """``[K, s, s]`` low-resolution mask logits to ``[K, H, W]`` logits at the original size."""
    x = F.interpolate(low_res[None].float(), (longest, longest), mode="bilinear", align_corners=False)
    x = x[..., : input_size[0], : input_size[1]]
    return F.interpolate(x, size, mode="bilinear", align_corners=False)[0]


def prior_to_mask_input(prior: np.ndarray, input_size: tuple[int, int], longest: int, side: int) -> torch.Tensor:
    """A binary ``[H, W]`` prior as SAM's ``[1, 1, side, side]`` mask input (resized, padded, +-logit)."""
    t = torch.from_numpy(prior.astype(np.float32))[None, None]
    t = F.interpolate(t, input_size, mode="nearest")
    t = F.pad(t, (0, longest - input_size[1], 0, longest - input_size[0]))
    t = F.interpolate(t, (side, side), mode="bilinear", align_corners=False)
    return (t * 2 - 1) * PRIOR_LOGIT


def weights_folder(source: str, what: str) -> Path:
    """A local folder, or a Hub repository's snapshot (downloaded once); :class:`SamUnavailable` otherwise."""
    from deris_core.hub import HubError, looks_like_repo_id, snapshot

    folder = Path(source).expanduser()
    if folder.is_dir():
        return folder
    if not looks_like_repo_id(source):
        raise SamUnavailable(f"{what} weights '{source}' are neither a folder nor a Hugging Face repository id")
    try:
        return snapshot(source, ["*.json", "*.safetensors", "*.txt"])
    except HubError as exc:
        raise SamUnavailable(str(exc)) from None


def unloadable(what: str, source: str, exc: BaseException) -> SamUnavailable:
    """The one line saying why ``what``'s weights in ``source`` could not be loaded (its first line)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return SamUnavailable(f"{what} weights in '{source}' could not be loaded: {first[:200]}")


def device_dtype(device: str, dtype: str | None) -> tuple[torch.device, torch.dtype]:
    """The device and the dtype the DeRIS predictor would choose (bf16 where it is native, else fp32)."""
    from deris_core.hardware import choose_precision, resolve_device

    dev = resolve_device(device)
    precision = choose_precision(dtype, dev)
    return dev, torch.bfloat16 if precision.dtype == torch.bfloat16 and not precision.int8 else torch.float32


class SamRefiner:
    """SAM on a device and dtype; ``encoder_calls`` counts image embeddings computed (the cache's test)."""

    name = "sam"

    def __init__(self, model, processor, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 source: str = "", cache_images: int = 4) -> None:
        self.model = model.to(device=device, dtype=dtype).eval()
        self.processor = processor
        self.device, self.dtype, self.source = torch.device(device), dtype, source
        size = processor.image_processor.size
        self.longest = int(size["longest_edge"] if isinstance(size, dict) else size.longest_edge)
        self.encoder_calls = 0
        self._cache = StateCache(cache_images)

    @classmethod
    def load(cls, source: str, device: str = "auto", dtype: str | None = None) -> "SamRefiner":
        """From a folder or a Hub repository id; :class:`SamUnavailable` with the reason when it cannot."""
        try:
            from transformers import SamModel, SamProcessor
        except ImportError:
            raise SamUnavailable("SAM needs transformers (pip install 'transformers>=4.40')") from None
        folder = weights_folder(source, "SAM")
        try:
            model = SamModel.from_pretrained(folder)
            processor = SamProcessor.from_pretrained(folder)
        except (OSError, ValueError) as exc:
            raise unloadable("SAM", source, exc) from None
        dev, torch_dtype = device_dtype(device, dtype)
        log.info("refiner: SAM from %s on %s in %s", source, dev, "bf16" if torch_dtype == torch.bfloat16 else "fp32")
        return cls(model, processor, dev, torch_dtype, source)

    @torch.inference_mode()
    def set_image(self, image: np.ndarray, key: str | None = None) -> SamState:
        """The image embedding, computed once per ``key`` (default: a digest of the pixels)."""
        image = check_image(image)
        key = key or image_key(image)
        if (cached := self._cache.get(key)) is not None:
            return cached
        t0 = time.perf_counter()
        inputs = self.processor.image_processor(images=image, return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device, self.dtype)
        emb = self.model.get_image_embeddings(pixels)
        self.encoder_calls += 1
        size = (int(image.shape[0]), int(image.shape[1]))
        state = SamState(key, size, resized_size(size, self.longest), self.longest, emb,
                         {"embedding_s": time.perf_counter() - t0})
        self._cache.put(key, state)
        return state

    @torch.inference_mode()
    def refine(self, image_state: SamState, points=None, labels=None, box=None, prior_mask=None) -> RefineResult:
        """The mask from the prompt encoder and the mask decoder on the cached embedding: for one click
        alone SAM gives three (its ambiguity outputs) and the best by predicted IoU is the one returned
        (``masks`` ``[1, H, W]``, ``scores`` its predicted IoU)."""
        t0 = time.perf_counter()
        st = image_state
        p = check_prompts(st.size, points, labels, box, prior_mask)
        if p.empty:
            return empty_result(st.size)
        kw: dict = {}
        if len(p.points):
            pts = to_input(p.points, st.size, st.input_size)
            kw["input_points"] = torch.tensor(pts, dtype=self.dtype, device=self.device)[None, None]
            kw["input_labels"] = torch.tensor(p.labels, dtype=torch.long, device=self.device)[None, None]
        bx = p.box
        if bx is None and p.prior is not None and p.prior.any() and not len(p.points):
            ys, xs = np.nonzero(p.prior)
            bx = (xs.min(), ys.min(), xs.max(), ys.max())
        if bx is not None:
            b = to_input(np.asarray(bx, np.float64).reshape(2, 2), st.size, st.input_size).reshape(-1)
            kw["input_boxes"] = torch.tensor(b, dtype=self.dtype, device=self.device)[None, None]
        if p.prior is not None and p.prior.any():
            last = st.embeddings[-1] if isinstance(st.embeddings, (list, tuple)) else st.embeddings  # SAM 2: levels
            side = 4 * int(last.shape[-1])
            kw["input_masks"] = prior_to_mask_input(p.prior, st.input_size, st.longest, side).to(self.device, self.dtype)
        multimask = len(p.points) == 1 and bx is None
        out = self.model(image_embeddings=st.embeddings, multimask_output=multimask, **kw)
        scores = out.iou_scores[0, 0].float().cpu().numpy()
        best = int(np.argmax(scores))
        # only the chosen mask is upsampled to the image's size (the others are never shown; bilinear
        # resizing is per channel, so it is the same mask as when all three were)
        low = out.pred_masks[0, 0, best:best + 1].float()  # [1, s, s]
        mask = (to_original(low, st.size, st.input_size, st.longest) > 0).cpu().numpy()
        return RefineResult(mask, scores[best:best + 1], 0, {"refine_s": time.perf_counter() - t0})
