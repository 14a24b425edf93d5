"""SAM-style predictor: ``set_image`` once (cached), then ``predict(expression)`` many times.

Only the cognition branch and the query decoder depend on the text; the Swin backbone,
the pixel decoder, the decoder's key/value memory and BEiT-3's patch embeddings depend on
the image alone and are computed once in :meth:`Predictor.set_image`.

Concurrency: the model is shared and read-only. The cached image lives in an immutable
:class:`ImageState` that ``set_image`` returns; pass it to ``predict(..., image=state)`` to
be independent of other callers (the app keeps one per user session). Without ``image=``
the predictor uses the state of its last ``set_image`` call, which is only meaningful for a
single caller. Thresholds never re-run the network: a :class:`Prediction` keeps the logits.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .config import DeRISConfig
from .hardware import Precision, given_precision
from .model import DeRIS, ImageFeatures
from .model.layers import pack_linear_weights, quantize_int8_weights
from .model.decoder import upsample_masks
from .postprocess import binary_masks, boxes_to_original, nearest_index_maps, referring_scores, resize_nearest
from .preprocess import ImageInput, load_image, preprocess
from .tokenizer import BEiT3Tokenizer, Encoded

_PAUSE = threading.local()  # the ``pause`` of the set_image call running on this thread, if any


def _pause_hook(module: torch.nn.Module, args: tuple) -> None:
    fn = getattr(_PAUSE, "fn", None)
    if fn is not None:
        fn()


@dataclass(frozen=True)
class ImageState:
    """Everything cached for one image. Immutable; safe to share between threads."""

    image: np.ndarray  # RGB uint8 HxWx3 (original, after EXIF rotation)
    features: ImageFeatures
    original_size: tuple[int, int]
    scale_factor: tuple[float, float, float, float]
    timings: dict[str, float]


@dataclass
class Prediction:
    """Result for one expression: every candidate query with its mask and referring score.

    Only the network's 96x96 mask logits are kept; everything derived from them is computed
    on first use and cached: the official 384x384 binary masks (x4 bilinear upsampling, then
    the sigmoid threshold), one candidate's mask at the original size (:meth:`mask`), pixel
    areas at the original size without resizing anything (:meth:`areas`).
    """

    expression: str
    scores: np.ndarray  # [Q] referring score per candidate query
    existence: float  # sigmoid(existence logit): probability that something is referred
    boxes: np.ndarray  # [Q, 4] x1, y1, x2, y2 in original pixels
    original_size: tuple[int, int]
    score_threshold: float
    mask_threshold: float
    low_res_logits: torch.Tensor = field(repr=False)  # [Q, 96, 96] float32 (kept for re-thresholding)
    timings: dict[str, float] = field(default_factory=dict)
    truncated: bool = False  # the expression was longer than the token budget
    _cache: dict = field(default_factory=dict, repr=False)  # binary masks for ``mask_threshold``

    @property
    def num_candidates(self) -> int:
        return int(self.scores.shape[0])

    @property
    def referred(self) -> list[int]:
        """Indices of queries with score strictly above the threshold, best first."""
        idx = np.nonzero(self.scores > self.score_threshold)[0]
        return sorted(idx.tolist(), key=lambda i: -self.scores[i])

    @property
    def order(self) -> list[int]:
        """All candidate indices sorted by score, best first."""
        return np.argsort(-self.scores, kind="stable").tolist()

    @property
    def no_target(self) -> bool:
        """The official verdict: no candidate scores above the threshold."""
        return not bool((self.scores > self.score_threshold).any())

    @property
    def mask_logits(self) -> torch.Tensor:
        """``[Q, 384, 384]`` float32 mask logits (the official upsampling; computed on each call)."""
        return upsample_masks(self.low_res_logits[None])[0]

    @property
    def masks_384(self) -> np.ndarray:
        """``[Q, 384, 384]`` uint8 binary masks at the network's output size (computed once)."""
        m = self._cache.get("masks_384")
        if m is None:
            m = self._cache["masks_384"] = binary_masks(self.mask_logits, self.mask_threshold).numpy()
        return m

    def mask(self, index: int) -> np.ndarray:
        """``[H, W]`` uint8 binary mask of one candidate at the original size (computed once)."""
        key = ("mask", int(index))
        m = self._cache.get(key)
        if m is None:
            m = self._cache[key] = resize_nearest(self.masks_384[index], self.original_size)
        return m

    def forget_masks(self, keep: "list[int] | tuple[int, ...]" = ()) -> None:
        """Drop the cached full-size masks of every candidate but ``keep`` (memory: 0.8 MB each at
        1024x768); they are computed again when asked for."""
        keep = {int(k) for k in keep}
        for key in [k for k in self._cache if isinstance(k, tuple) and k[0] == "mask" and k[1] not in keep]:
            del self._cache[key]

    @property
    def masks(self) -> np.ndarray:
        """``[Q, H, W]`` uint8 binary masks at the original size (every candidate: prefer :meth:`mask`)."""
        h, w = self.original_size
        if not self.num_candidates:
            return np.zeros((0, h, w), np.uint8)
        return np.stack([self.mask(i) for i in range(self.num_candidates)])

    def areas(self) -> np.ndarray:
        """``[Q]`` mask areas in pixels at the original size, without resizing any mask."""
        rows, cols = nearest_index_maps(self.masks_384.shape[1:], self.original_size)
        size = self.masks_384.shape[1]
        rc = np.bincount(rows, minlength=size).astype(np.float32)
        cc = np.bincount(cols, minlength=size).astype(np.float32)
        q = self.num_candidates
        per_row = self.masks_384.reshape(q * size, size).astype(np.float32) @ cc  # integers < 2**24: exact
        return np.rint(per_row.reshape(q, size).astype(np.float64) @ rc.astype(np.float64)).astype(np.int64)

    @property
    def union_mask(self) -> np.ndarray:
        """Union of the referred candidates' masks at the original size (zeros if no target)."""
        keep = self.referred
        h, w = self.original_size
        if not keep:
            return np.zeros((h, w), dtype=np.uint8)
        if "masks_384" in self._cache:
            small = self.masks_384[keep].max(0)
        else:
            small = binary_masks(upsample_masks(self.low_res_logits[keep][None])[0], self.mask_threshold).numpy().max(0)
        return resize_nearest(small, self.original_size)

    def with_thresholds(self, score_threshold: float | None = None, mask_threshold: float | None = None) -> "Prediction":
        """The same prediction under other thresholds (no network call; masks reused when the
        mask threshold is unchanged)."""
        st = self.score_threshold if score_threshold is None else float(score_threshold)
        mt = self.mask_threshold if mask_threshold is None else float(mask_threshold)
        _check_threshold("score_threshold", st)
        _check_threshold("mask_threshold", mt)
        cache = self._cache if mt == self.mask_threshold else {}
        return Prediction(
            self.expression, self.scores, self.existence, self.boxes, self.original_size, st, mt,
            self.low_res_logits, dict(self.timings), self.truncated, cache,
        )

    def to_dict(self) -> dict:
        """JSON-friendly summary (no masks)."""
        areas = self.areas()
        return {
            "expression": self.expression,
            "no_target": self.no_target,
            "existence": round(self.existence, 6),
            "score_threshold": self.score_threshold,
            "mask_threshold": self.mask_threshold,
            "referred": self.referred,
            "truncated": self.truncated,
            "candidates": [
                {
                    "index": int(i),
                    "score": round(float(self.scores[i]), 6),
                    "box_xyxy": [round(float(v), 2) for v in self.boxes[i]],
                    "area": int(areas[i]),
                    "referred": bool(self.scores[i] > self.score_threshold),
                }
                for i in self.order
            ],
            "image_size": list(self.original_size),
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
        }


def _flat_tensors(obj) -> list[torch.Tensor]:
    """The tensors inside nested dataclasses, lists and tuples, in field order."""
    import dataclasses

    if isinstance(obj, torch.Tensor):
        return [obj]
    if dataclasses.is_dataclass(obj):
        return [t for f in dataclasses.fields(obj) for t in _flat_tensors(getattr(obj, f.name))]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _flat_tensors(o)]
    return []


def _check_threshold(name: str, value: float) -> None:
    if not (0.0 <= value <= 1.0) or np.isnan(value):
        raise ValueError(f"{name} must be between 0 and 1, got {value}")


class Predictor:
    """Referring segmentation on one image at a time, many expressions per image."""

    def __init__(
        self,
        model: DeRIS,
        tokenizer: BEiT3Tokenizer,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        precision: Precision | None = None,
    ) -> None:
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"dtype must be torch.float32 or torch.bfloat16, got {dtype}")
        self.device = torch.device(device)
        self.dtype = dtype  # weights and activations (bf16: the whole network, see docs/performance.md, "bf16")
        # What runs and why (``load_predictor`` chooses it; a direct caller gets the dtype it asked for).
        self.precision: Precision = precision or given_precision(dtype, self.device)
        # Where the weights came from (``load_predictor`` fills these in): a one-line description for
        # people, "bundled" or what was asked for, and the file itself (what pre-annotation hashes).
        self.description = ""
        self.source = ""
        self.weights_file: Path | None = None
        moved = any(t.device != self.device or (t.is_floating_point() and t.dtype != dtype)
                    for t in itertools.chain(model.parameters(), model.buffers()))
        # (an int8 model built by the loader stays as it is: .to() would bring float weights back)
        self.model = (model.to(self.device, dtype) if moved else model).eval()
        if self.device.type == "cpu" and self.precision.int8:
            quantize_int8_weights(self.model)  # int8 weights, the few sensitive layers packed in float
        elif self.device.type == "cpu":
            pack_linear_weights(self.model)  # oneDNN layout in place, no extra copy
        self.cfg: DeRISConfig = model.cfg
        if tokenizer.max_token != self.cfg.max_token:
            raise ValueError(f"tokenizer max_token {tokenizer.max_token} != model max_token {self.cfg.max_token}")
        if tokenizer.vocab_size > self.cfg.beit3.vocab_size:
            raise ValueError(
                f"tokenizer produces ids up to {tokenizer.vocab_size - 1} but the model vocabulary has "
                f"{self.cfg.beit3.vocab_size} entries: wrong tokenizer for these weights?"
            )
        self.tokenizer = tokenizer
        self.score_threshold = self.cfg.postprocess.score_threshold
        self.mask_threshold = self.cfg.postprocess.mask_threshold
        self._state: ImageState | None = None
        self._lock = threading.Lock()
        self._pause_points = False  # hooks of set_image(pause=...) installed
        self.forward_calls = 0  # number of network passes (tests count them)

    # --- image ---------------------------------------------------------------------------

    def set_image(self, image: ImageInput, pause: Callable[[], None] | None = None) -> ImageState:
        """Load, pre-process and encode an image; returns (and remembers) its cached state.

        ``pause`` (a background caller's) is called before each block of the image encoder (every
        Swin block, every layer of the pixel decoder and its two output convolutions, BEiT-3's patch
        embedding): one that blocks while
        interactive work runs makes this encode yield to it between blocks; one that raises abandons it.
        Other threads' calls are unaffected."""
        t0 = time.perf_counter()
        rgb = load_image(image)
        pre = preprocess(rgb, self.cfg.swin.img_size, self.cfg.beit3.img_size)
        t1 = time.perf_counter()
        if pause is not None:
            self._install_pause_points()
        _PAUSE.fn = pause
        try:
            with torch.inference_mode():
                feats = self.model.encode_image(pre.image.to(self.device, self.dtype),
                                                pre.image_mini.to(self.device, self.dtype))
        finally:
            _PAUSE.fn = None
        self._sync()
        t2 = time.perf_counter()
        state = ImageState(rgb, feats, pre.original_size, pre.scale_factor, {"preprocess": t1 - t0, "image_encoder": t2 - t1})
        with self._lock:
            self._state = state
            self.forward_calls += 1
        return state

    def set_images(self, images: Sequence[ImageInput]) -> list[ImageState]:
        """Several images encoded in one batched pass (pre-annotation); one state per image, each as
        :meth:`set_image` would give it (the last one is remembered)."""
        if not images:
            return []
        t0 = time.perf_counter()
        rgbs = [load_image(im) for im in images]
        pres = [preprocess(rgb, self.cfg.swin.img_size, self.cfg.beit3.img_size) for rgb in rgbs]
        t1 = time.perf_counter()
        with torch.inference_mode():
            feats = self.model.encode_image(torch.cat([p.image for p in pres]).to(self.device, self.dtype),
                                            torch.cat([p.image_mini for p in pres]).to(self.device, self.dtype))
            per = [feats.select(torch.tensor([i], device=self.device)) for i in range(len(pres))]
        self._sync()
        t2 = time.perf_counter()
        n = len(pres)
        states = [ImageState(rgb, f, p.original_size, p.scale_factor,
                             {"preprocess": (t1 - t0) / n, "image_encoder": (t2 - t1) / n})
                  for rgb, f, p in zip(rgbs, per, pres)]
        with self._lock:
            self._state = states[-1]
            self.forward_calls += 1
        return states

    def predict_pairs(self, pairs: Sequence[tuple[ImageState, str]]) -> list[Prediction]:
        """Expressions on several cached images in one batched pass (``(image, expression)`` pairs)."""
        if not pairs:
            return []
        states, expressions = [p[0] for p in pairs], [p[1] for p in pairs]
        if len(set(map(id, states))) == 1:
            return self.predict_batch(expressions, image=states[0])
        ids, mask, encoded = self.tokenizer.encode_batch(expressions)
        from .model.deris import _map_tensors

        with torch.inference_mode():
            flat = [_flat_tensors(s.features) for s in states]  # the same fields in the same order
            joined = iter([torch.cat(ts) for ts in zip(*flat)])
            features = _map_tensors(states[0].features, lambda t: next(joined))
        return self._predict_tokens(states, ids, mask, expressions, encoded, self.score_threshold, self.mask_threshold,
                                    features=features)

    def _install_pause_points(self) -> None:
        """Hooks before each encoder block and each block of the expression's pass (every BEiT-3 layer,
        every decoder cross-attention and loopback step) that call the running thread's ``pause``
        (installed once; a thread without a ``pause`` only pays a thread-local look-up)."""
        from .model.beit3 import MultiwayBlock
        from .model.layers import CrossAttentionLayer
        from .model.loopback import LoopbackStep
        from .model.pixel_decoder import DeformableEncoderLayer, PixelDecoder
        from .model.swin import SwinBlock

        with self._lock:
            if self._pause_points:
                return
            points = [m for m in self.model.modules() if isinstance(m, (SwinBlock, DeformableEncoderLayer))]
            for m in self.model.modules():
                if isinstance(m, PixelDecoder):  # its stride-4 output conv is the encoder's longest step
                    points += [m.output, m.mask_features]
            points.append(self.model.cognition.beit3.patch_embed)
            points += [m for m in self.model.modules() if isinstance(m, (MultiwayBlock, CrossAttentionLayer, LoopbackStep))]
            for m in points:
                m.register_forward_pre_hook(_pause_hook)
            self._pause_points = True

    @property
    def image_state(self) -> ImageState | None:
        return self._state

    def _resolve(self, image: ImageState | None) -> ImageState:
        state = image if image is not None else self._state
        if state is None:
            raise RuntimeError("no image: call set_image() first (or pass image=state)")
        return state

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # --- expressions -----------------------------------------------------------------------

    def predict(
        self,
        expression: str,
        *,
        image: ImageState | None = None,
        score_threshold: float | None = None,
        mask_threshold: float | None = None,
        pause: Callable[[], None] | None = None,
    ) -> Prediction:
        """Segment what ``expression`` refers to in the cached image. ``pause``: as for
        :meth:`set_image`, called before each block of the expression's pass (a background caller's)."""
        return self.predict_batch([expression], image=image, score_threshold=score_threshold, mask_threshold=mask_threshold,
                                  pause=pause)[0]

    def predict_batch(
        self,
        expressions: Sequence[str],
        *,
        image: ImageState | None = None,
        score_threshold: float | None = None,
        mask_threshold: float | None = None,
        pause: Callable[[], None] | None = None,
    ) -> list[Prediction]:
        """Several expressions on one image in one batched pass (``pause``: see :meth:`predict`)."""
        if isinstance(expressions, str):
            raise TypeError("predict_batch takes a list of expressions")
        if not expressions:
            return []
        st = self.score_threshold if score_threshold is None else float(score_threshold)
        mt = self.mask_threshold if mask_threshold is None else float(mask_threshold)
        _check_threshold("score_threshold", st)
        _check_threshold("mask_threshold", mt)
        state = self._resolve(image)
        t0 = time.perf_counter()
        ids, mask, encoded = self.tokenizer.encode_batch(list(expressions))
        t1 = time.perf_counter()
        preds = self._predict_tokens(state, ids, mask, list(expressions), encoded, st, mt, pause=pause)
        for p in preds:
            p.timings["tokenize"] = (t1 - t0) / len(preds)
        return preds

    def predict_tokens(self, token_ids: torch.Tensor, padding_mask: torch.Tensor, *, image: ImageState | None = None) -> list[Prediction]:
        """Lower-level entry for pre-tokenised input ``[B, max_token]`` (datasets, benchmarks)."""
        state = self._resolve(image)
        n = token_ids.shape[0]
        return self._predict_tokens(state, token_ids, padding_mask, [""] * n, [None] * n, self.score_threshold, self.mask_threshold)

    def _predict_tokens(
        self,
        state: ImageState | list[ImageState],
        ids: torch.Tensor,
        mask: torch.Tensor,
        expressions: list[str],
        encoded: list[Encoded | None],
        st: float,
        mt: float,
        features: ImageFeatures | None = None,
        pause: Callable[[], None] | None = None,
    ) -> list[Prediction]:
        """``state``: the image of every expression, or one image per expression (then ``features``
        holds theirs, batched)."""
        states = state if isinstance(state, list) else [state] * len(expressions)
        t0 = time.perf_counter()
        if pause is not None:
            self._install_pause_points()
        _PAUSE.fn = pause
        try:
            with torch.inference_mode():
                out = self.model.decode(features if features is not None else states[0].features, ids.to(self.device),
                                        mask.to(self.device))
                scores = referring_scores(out.refer_logits).cpu().numpy()
                existence = out.existence_logit.float().sigmoid()[:, 0].cpu().numpy()
                logits = out.decoder.mask_logits[-1].float().cpu()  # 96x96; upsampled per expression
                size = (self.cfg.swin.img_size, self.cfg.swin.img_size)
                boxes = [boxes_to_original(b, size, s.scale_factor).cpu().numpy() for b, s in zip(out.boxes, states)]
        finally:
            _PAUSE.fn = None
        self._sync()
        t1 = time.perf_counter()
        with self._lock:
            self.forward_calls += 1
        per = (t1 - t0) / len(expressions)
        return [
            Prediction(
                expression=expressions[i],
                scores=scores[i],
                existence=float(existence[i]),
                boxes=boxes[i],
                original_size=states[i].original_size,
                score_threshold=st,
                mask_threshold=mt,
                low_res_logits=logits[i],
                timings={"decode": per},
                truncated=bool(encoded[i].truncated) if encoded[i] is not None else False,
            )
            for i in range(len(expressions))
        ]
