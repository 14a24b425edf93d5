"""DeRIS: decoupled perception and cognition for referring image segmentation.

``DeRIS.encode_image`` runs everything that depends on the image only (Swin, pixel
decoder, the decoder's key/value memory, BEiT-3's vision embeddings); ``DeRIS.decode`` runs
the expression-dependent rest: BEiT-3 over vision + text tokens, the masked decoder with
its loopback rounds, and the cognition post-step. ``forward`` is simply both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..config import DeRISConfig
from .cognition import CognitionBranch, CognitionFeatures
from .decoder import DecoderOutput, upsample_masks
from .perception import PerceptionBranch, PerceptionImage


@dataclass
class ImageFeatures:
    """Image-only features of a batch of images (what a predictor caches)."""

    perception: PerceptionImage
    vision_tokens: Tensor  # BEiT-3 vision embeddings [B, 1 + patches, D]

    def select(self, index: Tensor) -> "ImageFeatures":
        """The features of images ``index`` (``[N]`` long): training encodes each image of a
        batch once and gives it to every expression of that image."""
        return _map_tensors(self, lambda t: t.index_select(0, index))


def _map_tensors(obj: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """Apply ``fn`` to every tensor inside nested dataclasses, lists and tuples."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if dataclasses.is_dataclass(obj):
        return type(obj)(**{f.name: _map_tensors(getattr(obj, f.name), fn) for f in dataclasses.fields(obj)})
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(o, fn) for o in obj)
    return obj


@dataclass
class DeRISOutput:
    refer_logits: Tensor  # [B, Q, 2]; softmax(...)[..., 0] is the referring score
    existence_logit: Tensor  # [B, 1]; sigmoid = probability that something is referred
    boxes: Tensor  # [B, Q, 4] cx, cy, w, h in [0, 1]
    class_logits: Tensor  # [B, Q, 2] perception head
    cognition_logits: Tensor  # [B, Q, 2] cognition post-step head (unused by post-processing)
    decoder: DecoderOutput  # every stage (auxiliary outputs), masks at 96x96
    cognition: CognitionFeatures
    features: ImageFeatures  # the image-only features this output was decoded from
    text_length: int  # text tokens actually run (trailing padding is trimmed)

    @property
    def pred_masks(self) -> Tensor:
        """``[B, Q, 384, 384]`` mask logits of the final stage (the official x4 upsampling, done on
        access: a predictor keeps the 96x96 logits and upsamples per expression)."""
        return upsample_masks(self.decoder.mask_logits[-1])


def trim_padding(token_ids: Tensor, padding_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Drop trailing columns that are padding for every sample of the batch.

    Padded text positions are masked out of every attention that reads them (BEiT-3 and
    the cognition decoder with -inf, the loopback with an additive -100, i.e. a weight below
    1e-43), so they cannot change any other output; skipping them saves ~20% of BEiT-3.
    """
    real = padding_mask.logical_not()
    if not bool(real.any()):
        raise ValueError("every expression in the batch is empty (all tokens are padding)")
    idx = torch.arange(real.shape[1], device=real.device)
    length = int((real * (idx + 1)).max())
    return token_ids[:, :length], padding_mask[:, :length]


class DeRIS(nn.Module):
    def __init__(self, cfg: DeRISConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.cognition = CognitionBranch(cfg)
        self.perception = PerceptionBranch(cfg)

    def encode_image(self, image: Tensor, image_mini: Tensor) -> ImageFeatures:
        """``image [B, 3, 384, 384]`` and ``image_mini [B, 3, 224, 224]``, both normalised."""
        return ImageFeatures(self.perception.encode_image(image), self.cognition.beit3.embed_image(image_mini))

    def decode(self, features: ImageFeatures, token_ids: Tensor, padding_mask: Tensor) -> DeRISOutput:
        """Run the expression-dependent part. ``features`` may hold one image for many expressions."""
        token_ids, padding_mask = trim_padding(token_ids, padding_mask)
        pad = padding_mask.bool()
        cog = self.cognition.encode(features.vision_tokens, token_ids, pad)
        dec = self.perception.decoder(cog.query_feat, features.perception.memory, cog.img_feat, cog.text_feat, pad)
        existence, cog_logits, _ = self.cognition.judge(dec.queries, cog.text_feat, pad)
        return DeRISOutput(
            refer_logits=dec.refer_logits[-1],
            existence_logit=existence,
            boxes=dec.boxes[-1],
            class_logits=dec.class_logits[-1],
            cognition_logits=cog_logits,
            decoder=dec,
            cognition=cog,
            features=features,
            text_length=token_ids.shape[1],
        )

    def forward(self, image: Tensor, image_mini: Tensor, token_ids: Tensor, padding_mask: Tensor,
                image_index: Tensor | None = None) -> DeRISOutput:
        """Both parts. ``image_index[i]`` (optional) names the image of expression ``i`` when a
        batch holds fewer images than expressions."""
        features = self.encode_image(image, image_mini)
        if image_index is not None:
            features = features.select(image_index)
        return self.decode(features, token_ids, padding_mask)


def build_deris(cfg: DeRISConfig, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> DeRIS:
    """Build a DeRIS model (random weights) in eval mode. ``device='meta'`` allocates nothing;
    ``dtype`` (e.g. ``torch.bfloat16``) creates the parameters in that type directly, so a
    bf16 model never holds a float32 copy (peak memory)."""
    if device is not None and str(device) == "meta":
        with torch.device("meta"):
            return DeRIS(cfg).eval()
    previous = torch.get_default_dtype()
    if dtype is not None:
        torch.set_default_dtype(dtype)
    try:
        model = DeRIS(cfg).eval()
    finally:
        torch.set_default_dtype(previous)
    if dtype is not None:
        model = model.to(dtype)  # the few tensors created with an explicit float32 type
    return model.to(device) if device is not None else model
