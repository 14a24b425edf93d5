"""SAM 2 through ``transformers`` (``Sam2Model``): ``--refiner sam2:facebook/sam2.1-hiera-tiny``.

The same prompts, cache and precision as :mod:`.sam` (:class:`Sam2Refiner` is a :class:`SamRefiner`);
what differs is the image's way in: SAM 2 resizes the picture to a square (1024x1024, no padding), so a
point (x, y) becomes (x * 1024/w, y * 1024/h) and the masks are resized back from the square
(:func:`.sam.to_input` / :func:`.sam.to_original` with the input size (1024, 1024)). Its image processor
needs torchvision, which the studio does not require, so the resize (bilinear) and the normalisation
(``image_mean`` / ``image_std`` of the folder's ``preprocessor_config.json``) are done here with OpenCV.
The image embedding is SAM 2's list of feature levels, computed once per image.
"""

from __future__ import annotations

import json
import logging
import time

import cv2
import numpy as np
import torch

from .base import check_image, image_key
from .sam import SamRefiner, SamState, SamUnavailable, device_dtype, unloadable, weights_folder

log = logging.getLogger(__name__)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Sam2Refiner(SamRefiner):
    name = "sam2"

    def __init__(self, model, side: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 source: str = "", mean=IMAGENET_MEAN, std=IMAGENET_STD, cache_images: int = 4) -> None:
        from .base import StateCache

        self.model = model.to(device=device, dtype=dtype).eval()
        self.processor = None
        self.device, self.dtype, self.source = torch.device(device), dtype, source
        self.longest = int(side)
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        self.encoder_calls = 0
        self._cache = StateCache(cache_images)

    @classmethod
    def load(cls, source: str, device: str = "auto", dtype: str | None = None) -> "Sam2Refiner":
        """From a folder or a Hub repository id; :class:`SamUnavailable` with the reason when it cannot."""
        try:
            from transformers import Sam2Model
        except ImportError:
            raise SamUnavailable("SAM 2 needs transformers with Sam2Model (pip install 'transformers>=4.56')") from None
        folder = weights_folder(source, "SAM 2")
        try:
            model = Sam2Model.from_pretrained(folder)
        except (OSError, ValueError) as exc:
            raise unloadable("SAM 2", source, exc) from None
        pre = {}
        if (folder / "preprocessor_config.json").is_file():
            pre = json.loads((folder / "preprocessor_config.json").read_text())
        size = model.config.vision_config.backbone_config.image_size
        side = int(size[0] if isinstance(size, (list, tuple)) else size)
        dev, torch_dtype = device_dtype(device, dtype)
        log.info("refiner: SAM 2 from %s on %s in %s", source, dev, "bf16" if torch_dtype == torch.bfloat16 else "fp32")
        return cls(model, side, dev, torch_dtype, source, pre.get("image_mean", IMAGENET_MEAN),
                   pre.get("image_std", IMAGENET_STD))

    def pixels(self, image: np.ndarray) -> torch.Tensor:
        """The model's input: the image resized to the square side, scaled to [0, 1] and normalised."""
        x = cv2.resize(image, (self.longest, self.longest), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
        return torch.from_numpy((x - self.mean) / self.std).permute(2, 0, 1)[None].to(self.device, self.dtype)

    @torch.inference_mode()
    def set_image(self, image: np.ndarray, key: str | None = None) -> SamState:
        image = check_image(image)
        key = key or image_key(image)
        if (cached := self._cache.get(key)) is not None:
            return cached
        t0 = time.perf_counter()
        emb = list(self.model.get_image_embeddings(self.pixels(image)))
        self.encoder_calls += 1
        size = (int(image.shape[0]), int(image.shape[1]))
        state = SamState(key, size, (self.longest, self.longest), self.longest, emb,
                         {"embedding_s": time.perf_counter() - t0})
        self._cache.put(key, state)
        return state
