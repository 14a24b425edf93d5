"""What the benchmarks run: random weights of a published config and the official timings' inputs.

Shared by ``python -m deris_core.tools.bench`` (speed, memory), ``bench flops`` (arithmetic) and the
studio's latency benchmark (``python -m app.bench latency``). Speed does not depend on the weights.
"""

from __future__ import annotations

import sys

import torch

from ..config import get_config
from ..hardware import choose_precision, given_precision, normalize_request, resolve_device
from ..model import build_deris
from ..predictor import Predictor
from ..tokenizer import BOS, EOS, PAD


def _random_int8_model(cfg) -> torch.nn.Module:
    """Random weights with int8's linear layers (and the vocabulary) quantized as each is made, as ``load_predictor``
    does with a checkpoint: the float model never exists whole (peak memory)."""
    from ..model.layers import Embedding, int8_layers
    from ..weight_cache import materialize_buffers

    model = build_deris(cfg, device="meta")
    chosen = {id(m) for _, m in int8_layers(model)}
    gen = torch.Generator().manual_seed(0)
    for module in model.modules():
        for name, p in list(module.named_parameters(recurse=False)):
            w = torch.empty(p.shape, dtype=torch.float32).normal_(0.0, 0.02, generator=gen)
            setattr(module, name, torch.nn.Parameter(w, requires_grad=False))
        if id(module) in chosen or isinstance(module, Embedding):
            module.quantize_int8_()
    materialize_buffers(model)
    return model.eval()


class FixedIds:
    """Token ids of a 7-token expression (bos + 5 pieces + eos), as in the official timings."""

    def __init__(self, max_token: int, vocab: int) -> None:
        self.max_token = max_token
        self.vocab_size = min(vocab, 1000)

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.full((n, self.max_token), PAD, dtype=torch.long)
        mask = torch.ones((n, self.max_token), dtype=torch.long)
        pieces = [70, 841, 512, 93, 417]
        for i in range(n):
            row = [BOS] + [(p + 13 * i) % (self.vocab_size - 5) + 4 for p in pieces] + [EOS]
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 0
        return ids, mask


def build(config: str, device: str, dtype: str, fallback: bool = True) -> tuple[Predictor, FixedIds]:
    """A predictor with random weights of a published config, fed token ids directly.

    ``dtype`` is a request (``auto``/``fp32``/``bf16``/``int8``) resolved like ``load_predictor`` does,
    and so is ``device`` (``auto``: CUDA, then MPS, then the CPU); ``fallback=False`` runs bf16 as
    asked even where the hardware only emulates it."""
    torch.manual_seed(0)
    cfg = get_config(config)
    device = str(resolve_device(device))
    precision = choose_precision(dtype, device)
    if not fallback and normalize_request(dtype) == "bf16":
        precision = given_precision(torch.bfloat16, device)
    if precision.note:
        print(f"note: {precision.note}", file=sys.stderr)
    if precision.int8:
        model = _random_int8_model(cfg)
    else:
        model = build_deris(cfg, dtype=precision.dtype).to(device)
    fixed = FixedIds(cfg.max_token, cfg.beit3.vocab_size)
    return Predictor(model, fixed, device=device, dtype=precision.dtype, precision=precision), fixed  # type: ignore[arg-type]
