"""Training-only appearance supervision of the perception queries.

The released DeRIS starts its perception branch from a Mask2Former trained on COCO panoptic
segmentation, so its queries already encode *what* they segment (the category), not only
*where*. Trained from scratch with the 2-way objectness head alone, the queries learn to
segment but carry almost no appearance: a linear probe on the bundled model's first run
recovered colour at 41% (chance 28%) and shape at chance, and its referring scores were
the same for "the square" and "the star". The loopback's text layer then has nothing to
match the words against.

:class:`AttributeHead` restores that pre-training signal while training from scratch: linear
classifiers on the (normed) decoder queries predict the category and every annotated
attribute (the synthetic set's ``attributes``: colour, size, texture) of the instance each
query is matched to by the perception matching. The head lives outside the model: it is
not in the released weights and costs nothing at inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class AttributeVocabulary:
    """Names and values of the per-instance labels: ``category`` first, then sorted attributes."""

    names: list[str]
    values: list[list[str]]

    @classmethod
    def from_annotations(cls, annotations: dict[int, dict], categories: dict[int, str]) -> "AttributeVocabulary":
        found: dict[str, set[str]] = {}
        for ann in annotations.values():
            for key, value in (ann.get("attributes") or {}).items():
                if isinstance(value, (str, int)) and not isinstance(value, bool):
                    found.setdefault(str(key), set()).add(str(value))
        names = ["category"] + sorted(k for k, v in found.items() if len(v) > 1)
        values = [[categories.get(c, str(c)) for c in sorted(categories)] or
                  sorted({str(a["category_id"]) for a in annotations.values()})]
        values += [sorted(found[k]) for k in names[1:]]
        return cls(names, values)

    def labels(self, ann: dict, categories: dict[int, str]) -> list[int]:
        """Label indices of one annotation; -1 where it has no such attribute."""
        cat = categories.get(ann["category_id"], str(ann["category_id"]))
        out = [self.values[0].index(cat) if cat in self.values[0] else -1]
        attrs = ann.get("attributes") or {}
        for name, vals in zip(self.names[1:], self.values[1:]):
            v = attrs.get(name)
            out.append(vals.index(str(v)) if v is not None and str(v) in vals else -1)
        return out

    def to_dict(self) -> dict:
        return {"names": self.names, "values": self.values}


class AttributeHead(nn.Module):
    """Linear classifiers per label: one set on the decoder queries, one on pixel features
    average-pooled inside each instance's mask (the direct route into the pixel decoder)."""

    def __init__(self, dim: int, vocab: AttributeVocabulary) -> None:
        super().__init__()
        self.vocab = vocab
        self.classifiers = nn.ModuleList(nn.Linear(dim, len(v)) for v in vocab.values)
        self.pooled_classifiers = nn.ModuleList(nn.Linear(dim, len(v)) for v in vocab.values)

    @staticmethod
    def _ce(classifiers: nn.ModuleList, x: Tensor, labels: Tensor, num_instances: float) -> Tensor:
        total = x.new_zeros((), dtype=torch.float32)
        for i, head in enumerate(classifiers):
            logits = head(x.float())
            total = total + F.cross_entropy(logits, labels[:, i], ignore_index=-1, reduction="sum") + logits.sum() * 0.0
        return total / num_instances / len(classifiers)

    def loss(self, queries: Tensor, labels: Tensor, num_instances: float) -> Tensor:
        """Cross-entropy of ``queries [N, C]`` against ``labels [N, A]`` (-1 = unknown), summed over
        instances, divided by ``num_instances`` (global under DDP) and averaged over the labels."""
        return self._ce(self.classifiers, queries, labels, num_instances)

    def pooled_loss(self, levels: list[Tensor], instances: list[Tensor], labels: list[Tensor],
                    num_instances: float) -> Tensor:
        """The same labels from ``levels`` (pixel-decoder maps ``[B, C, h, w]``), each averaged
        inside every instance mask (``instances[i]: [N_i, S, S]``) and summed over levels."""
        pooled = []
        for i, masks in enumerate(instances):
            feat = 0
            for level in levels:
                m = F.adaptive_avg_pool2d(masks[None].to(level.dtype), level.shape[-2:])[0]  # [N, h, w]
                feat = feat + torch.einsum("nhw,chw->nc", m, level[i]) / m.sum((-1, -2))[:, None].clamp(min=1e-6)
            pooled.append(feat)
        return self._ce(self.pooled_classifiers, torch.cat(pooled), torch.cat(labels), num_instances)


def reduce_gradients(module: nn.Module, world_size: int) -> None:
    """Average the gradients of a module kept outside DistributedDataParallel."""
    if world_size <= 1:
        return
    import torch.distributed as dist

    for p in module.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= world_size
