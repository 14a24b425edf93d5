"""Training samples: pre-processed image views, tokens and target masks, with NSC.

Images are decoded and resized once (the official pre-processing: aspect ratio not kept,
OpenCV bilinear) and kept as uint8 in memory; targets are the union-free instance masks
resized to the perception view. Randomness (NSC, grouping) comes from generators seeded
by ``(seed, epoch, ...)`` so runs are reproducible and every DDP process agrees.

An item of :class:`TrainingSet` is a *group*: one sample, or with ``expressions_per_image
= K`` up to K expressions of the same image. :func:`collate` stacks each group's image once
and records in ``Batch.image_index`` which image every expression reads, so the
image-only part of the network (about half of a training step's compute) runs once per
image instead of once per expression.

A :class:`Rotation` names images whose groups take turns (fine-tuning's replay of the parent's
training set): each epoch uses a fixed number of their groups, the next ones of a seeded cycle
through all of them, so a large set is mixed in at a fixed share and every image of it is seen
before any repeats. Their views and masks are not kept in memory (each is seen once per cycle).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..config import DeRISConfig
from ..preprocess import normalize
from ..tokenizer import BEiT3Tokenizer
from .attributes import AttributeVocabulary
from .nsc import NonReferentConversion
from .refer import ReferDataset


_ROTATION_STREAM = 0x7E  # the rotation's order has its own random stream, apart from the epochs'


@dataclass(frozen=True)
class Rotation:
    """Images whose groups take turns, ``groups_per_epoch`` of them an epoch (see the module docstring)."""

    images: frozenset[int]
    groups_per_epoch: int


@dataclass
class Batch:
    image: Tensor  # [B, 3, S, S] normalised
    image_mini: Tensor  # [B, 3, s, s] normalised
    token_ids: Tensor  # [B, T]
    padding_mask: Tensor  # [B, T], 1 = padding
    targets: list[Tensor]  # [K_i, S, S] float {0, 1}: the referred instances
    has_target: Tensor  # [B] float
    instances: list[Tensor]  # [N_i, S, S] float {0, 1}: every instance of the image
    instance_labels: list[Tensor]  # [N_i, A] long: category + attribute indices (-1 unknown)
    image_index: Tensor  # [B] long: the row of ``image``/``image_mini`` that expression i reads

    @property
    def size(self) -> int:
        """Number of expressions (samples) in the batch."""
        return int(self.token_ids.shape[0])

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.image.to(device), self.image_mini.to(device), self.token_ids.to(device),
                     self.padding_mask.to(device), [t.to(device) for t in self.targets], self.has_target.to(device),
                     [t.to(device) for t in self.instances], [t.to(device) for t in self.instance_labels],
                     self.image_index.to(device))


class TrainingSet(Dataset):
    """Groups of training samples (see the module docstring); ``len`` counts groups."""

    def __init__(self, data: ReferDataset, tokenizer: BEiT3Tokenizer, cfg: DeRISConfig,
                 nsc: NonReferentConversion | None = None, seed: int = 0, expressions_per_image: int = 1,
                 rotation: Rotation | None = None) -> None:
        if expressions_per_image < 1:
            raise ValueError(f"expressions_per_image must be at least 1, got {expressions_per_image}")
        if rotation is not None and rotation.groups_per_epoch < 1:
            raise ValueError(f"a rotation needs at least one group an epoch, got {rotation.groups_per_epoch}")
        self.data, self.tokenizer, self.cfg, self.nsc, self.seed = data, tokenizer, cfg, nsc, seed
        self.per_image = expressions_per_image
        self.rotation = rotation
        self.vocab = AttributeVocabulary.from_annotations(data.annotations, data.categories)
        self._by_image: dict[int, list[int]] = {}
        for i, sample in enumerate(data.samples):
            self._by_image.setdefault(sample.image_id, []).append(i)
        rotating = rotation.images if rotation is not None else frozenset()
        self._rotating = sorted(i for i in self._by_image if i in rotating)
        self.epoch = 0
        self.groups = self._make_groups(0)
        self._views: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._masks: dict[int, np.ndarray] = {}
        self._image_anns: dict[int, list[int]] = {}
        for ann_id, ann in data.annotations.items():
            if not ann.get("iscrowd", 0):
                self._image_anns.setdefault(int(ann["image_id"]), []).append(ann_id)
        self._uncached_anns = {a for i in rotating for a in self._image_anns.get(i, ())}

    def _make_groups(self, epoch: int) -> list[list[int]]:
        """Sample indices per group: singletons in dataset order, or each image's samples
        shuffled (seeded by epoch and image) and cut into runs of ``per_image``. The number
        of groups is the same every epoch; which expressions share a group changes. With a
        rotation, its images' groups are left out but for this epoch's turn of them."""
        rotating = self.rotation.images if self.rotation is not None else frozenset()
        if self.per_image == 1 and not rotating:
            return [[i] for i in range(len(self.data))]
        groups = []
        for image_id, indices in self._by_image.items():
            if image_id not in rotating:
                groups += self._image_groups(image_id, indices, (epoch,))
        if self._rotating:
            q, n = self.rotation.groups_per_epoch, self._cycle_length()
            cycles: dict[int, list[list[int]]] = {}
            for pos in range(epoch * q, (epoch + 1) * q):
                cycle, k = divmod(pos, n)
                if cycle not in cycles:
                    cycles[cycle] = self._cycle(cycle)
                groups.append(cycles[cycle][k])
        return groups

    def _cycle(self, cycle: int) -> list[list[int]]:
        """The rotating images' groups of one cycle: the images in an order and with partners of
        the cycle's own, so every sample of them comes once a cycle."""
        order = np.random.default_rng((self.seed, _ROTATION_STREAM, cycle)).permutation(self._rotating).tolist()
        return [g for i in order for g in self._image_groups(i, self._by_image[i], (_ROTATION_STREAM, cycle))]

    def _cycle_length(self) -> int:
        return sum(math.ceil(len(self._by_image[i]) / self.per_image) for i in self._rotating)

    def _image_groups(self, image_id: int, indices: list[int], key: tuple[int, ...]) -> list[list[int]]:
        """One image's samples cut into groups of ``per_image``, shuffled by ``key`` (the epoch, or a
        rotation cycle) and the image; how many depends on the image only."""
        if self.per_image == 1:
            return [[i] for i in indices]
        order = np.random.default_rng((self.seed, *key, image_id)).permutation(indices).tolist()
        return [order[k : k + self.per_image] for k in range(0, len(order), self.per_image)]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.groups = self._make_groups(epoch)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> list[dict]:
        return [self.sample(i) for i in self.groups[index]]

    def _view(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        if image_id in self._views:
            return self._views[image_id]
        rgb = self.data.image_rgb(image_id)
        s, m = self.cfg.swin.img_size, self.cfg.beit3.img_size
        views = (cv2.resize(rgb, (s, s), interpolation=cv2.INTER_LINEAR),
                 cv2.resize(rgb, (m, m), interpolation=cv2.INTER_LINEAR))
        if self.rotation is None or image_id not in self.rotation.images:
            self._views[image_id] = views
        return views

    def _mask(self, ann_id: int) -> np.ndarray:
        if ann_id in self._masks:
            return self._masks[ann_id]
        s = self.cfg.swin.img_size
        mask = cv2.resize(self.data.instance_mask(ann_id), (s, s), interpolation=cv2.INTER_NEAREST)
        if ann_id not in self._uncached_anns:
            self._masks[ann_id] = mask
        return mask

    def sample(self, index: int) -> dict:
        """Sample ``index`` of the dataset, pre-processed, NSC applied."""
        sample = self.data.samples[index]
        sentence, ann_ids = sample.sentence, sample.ann_ids
        if self.nsc is not None:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            swapped = self.nsc(sample.image_id, sentence, bool(ann_ids), rng)
            if swapped is not None:
                sentence, ann_ids = swapped, ()
        big, mini = self._view(sample.image_id)
        enc = self.tokenizer.encode(sentence)
        s = self.cfg.swin.img_size
        empty = np.zeros((0, s, s), np.uint8)
        masks = np.stack([self._mask(a) for a in ann_ids]) if ann_ids else empty
        every = self._image_anns.get(sample.image_id, [])
        instances = np.stack([self._mask(a) for a in every]) if every else empty
        labels = np.array([self.vocab.labels(self.data.annotations[a], self.data.categories) for a in every],
                          np.int64).reshape(len(every), len(self.vocab.names))
        return {"image": big, "image_mini": mini, "ids": enc.ids, "pad": enc.padding_mask,
                "masks": masks, "has_target": bool(ann_ids), "instances": instances, "labels": labels}


def collate(groups: list[list[dict]]) -> Batch:
    """One batch from groups of samples; each group's image is stacked once."""
    items = [item for group in groups for item in group]
    image = torch.cat([normalize(g[0]["image"]) for g in groups])
    mini = torch.cat([normalize(g[0]["image_mini"]) for g in groups])
    index = torch.tensor([k for k, g in enumerate(groups) for _ in g], dtype=torch.long)
    ids = torch.stack([torch.as_tensor(i["ids"]) for i in items])
    pad = torch.stack([torch.as_tensor(i["pad"]) for i in items])
    targets = [torch.from_numpy(i["masks"]).float() for i in items]
    has = torch.tensor([i["has_target"] for i in items], dtype=torch.float32)
    instances = [torch.from_numpy(i["instances"]).float() for i in items]
    labels = [torch.from_numpy(i["labels"]) for i in items]
    return Batch(image, mini, ids, pad, targets, has, instances, labels, index)
