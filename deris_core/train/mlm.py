"""Training-only masked language modelling on the cognition encoder (BEiT-3's own pre-training task).

The released cognition branch starts from BEiT-3, pre-trained by masked data modelling on
image-text pairs, so its text outputs tell words apart and already look at the image to do
so. Trained from scratch with the DeRIS losses alone, our first bundled model's BEiT-3 gave
text outputs that did not: "the square" and "the star" produced the same features (cosine
1.000 at the noun) and therefore identical referring scores.

:func:`masked_language_loss` restores that pre-training signal while training from scratch:
a second pass of the encoder sees the expression with ``rate`` of its word pieces replaced by
``<unk>`` and a linear head predicts the original pieces from the text outputs. With the image
in the same attention, filling "the <unk> circle" needs the picture: it is grounding practice
for the encoder. The head lives outside the model (not in the released weights).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..model.beit3 import BEiT3Encoder
from ..tokenizer import BOS, EOS, PAD, UNK


class MaskedLanguageHead(nn.Module):
    def __init__(self, dim: int, vocab_size: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, vocab_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.norm(x))


def choose_masked(token_ids: Tensor, padding_mask: Tensor, rate: float, seed: int) -> Tensor:
    """Boolean ``[B, T]``: at least one and about ``rate`` of each expression's word pieces.

    Deterministic for (expression, seed), so every DDP process and a single process agree.
    """
    ids = token_ids.cpu()
    real = (padding_mask.cpu() == 0) & (ids != BOS) & (ids != EOS) & (ids != PAD)
    out = torch.zeros_like(real)
    for i in range(ids.shape[0]):
        pos = torch.nonzero(real[i]).flatten()
        if not len(pos):
            continue
        g = torch.Generator().manual_seed((seed * 1_000_003 + hash(tuple(ids[i].tolist()))) % 2**63)
        k = max(1, int(round(rate * len(pos))))
        out[i, pos[torch.randperm(len(pos), generator=g)[:k]]] = True
    return out.to(token_ids.device)


def masked_language_loss(beit3: BEiT3Encoder, head: MaskedLanguageHead, image_mini: Tensor, token_ids: Tensor,
                         padding_mask: Tensor, rate: float, seed: int, num_samples: float,
                         image_index: Tensor | None = None) -> Tensor:
    """Cross-entropy of the masked pieces, averaged per expression, summed, / ``num_samples``
    (the global batch size over the world size under DDP). ``image_index[i]``: the row of
    ``image_mini`` that expression ``i`` reads (default: row ``i``)."""
    masked = choose_masked(token_ids, padding_mask, rate, seed)
    corrupted = token_ids.masked_fill(masked, UNK)
    vision = beit3.embed_image(image_mini)
    if image_index is not None:
        vision = vision.index_select(0, image_index)
    _, _, text = beit3(vision, corrupted, padding_mask)
    logits = head(text[masked]).float()
    ce = F.cross_entropy(logits, token_ids[masked], reduction="none")
    per_sample = masked.sum(1).clamp(min=1).to(ce.dtype)
    weights = (1.0 / per_sample)[torch.nonzero(masked)[:, 0]]
    return (ce * weights).sum() / num_samples + logits.sum() * 0.0
