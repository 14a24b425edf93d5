"""Perception branch: Swin backbone -> pixel decoder -> masked query decoder.

Only the decoder depends on the expression (through the queries, the text and the
cognition image map); :meth:`PerceptionBranch.encode_image` does everything that
depends on the 384x384 image alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ..config import DeRISConfig
from .decoder import DecoderMemory, MaskedDecoder
from .pixel_decoder import PixelDecoder
from .swin import SwinBackbone


@dataclass
class PerceptionImage:
    backbone_features: list[Tensor]  # res2..res5
    mask_features: Tensor  # [B, C, 96, 96] pixel-decoder output
    multi_scale: list[Tensor]  # [12x12, 24x24, 48x48]
    memory: DecoderMemory


class PerceptionBranch(nn.Module):
    def __init__(self, cfg: DeRISConfig) -> None:
        super().__init__()
        self.backbone = SwinBackbone(cfg.swin)
        self.pixel_decoder = PixelDecoder(cfg.swin.channels, cfg.hidden_dim, cfg.pixel_decoder)
        self.decoder = MaskedDecoder(cfg.hidden_dim, cfg.num_queries, cfg.decoder)

    def encode_image(self, image: Tensor) -> PerceptionImage:
        feats = self.backbone(image)
        mask_features, multi_scale = self.pixel_decoder(feats)
        return PerceptionImage(feats, mask_features, multi_scale, self.decoder.prepare_image(mask_features, multi_scale))
