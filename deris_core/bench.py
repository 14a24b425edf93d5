"""Benchmark the predictor (random weights are fine: speed does not depend on them).

    python -m deris_core.bench --config deris-b-grefcoco --device cpu [--dtype fp32|bf16] [--runs 5] [--warmup 2] [--json]
    python -m deris_core.bench load --config deris-l-grefcoco     # start-up time (deris_core/bench_load.py)

Prints, for batch 1: full ``set_image`` + ``predict`` latency, ``predict`` on a cached image,
per-stage times, ``predict_batch`` of 8 expressions (time per expression) and peak memory;
median / min / max over the timed runs after warm-up. Mirrors the conditions of the
official CPU timings: a 300x451 image, 7 real tokens padded to ``max_token``.

``--dtype bf16`` runs the whole network in bfloat16. The studio's own latency (Enter -> overlay)
is an app benchmark: ``python -m app.bench latency`` (the core imports nothing of the app).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import numpy as np
import torch

from .config import get_config
from .model import build_deris
from .predictor import Predictor
from .runtime import configure_from_env
from .tokenizer import BOS, EOS, PAD
from .weights import DTYPES


class _FixedIds:
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


def _stats(values: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values), "runs": values}


def build(config: str, device: str, dtype: str) -> tuple[Predictor, _FixedIds]:
    """A predictor with random weights of a published config, fed token ids directly."""
    torch.manual_seed(0)
    cfg = get_config(config)
    torch_dtype = DTYPES[dtype]
    model = build_deris(cfg, dtype=torch_dtype).to(device)
    fixed = _FixedIds(cfg.max_token, cfg.beit3.vocab_size)
    return Predictor(model, fixed, device=device, dtype=torch_dtype), fixed  # type: ignore[arg-type]


def run(predictor: Predictor, fixed: _FixedIds, runs: int, warmup: int) -> dict:
    """Forward-pass figures (see the module docstring)."""
    dev, cfg, model = predictor.device, predictor.cfg, predictor.model
    image = np.random.default_rng(0).integers(0, 256, size=(300, 451, 3), dtype=np.uint8)
    ids1, mask1 = fixed.batch(1)
    ids8, mask8 = fixed.batch(8)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    full, cached, batch8, pre, enc, dec = [], [], [], [], [], []
    for i in range(warmup + runs):
        sync()
        t0 = time.perf_counter()
        state = predictor.set_image(image)
        p = predictor.predict_tokens(ids1, mask1, image=state)[0]
        _ = p.union_mask
        sync()
        t1 = time.perf_counter()
        p = predictor.predict_tokens(ids1, mask1, image=state)[0]
        _ = p.union_mask
        sync()
        t2 = time.perf_counter()
        ps = predictor.predict_tokens(ids8, mask8, image=state)
        for q in ps:
            _ = q.union_mask
        sync()
        t3 = time.perf_counter()
        if i >= warmup:
            full.append(t1 - t0)
            cached.append(t2 - t1)
            batch8.append((t3 - t2) / 8)
            pre.append(state.timings["preprocess"])
            enc.append(state.timings["image_encoder"])
            dec.append(p.timings["decode"])
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "config": cfg.name,
        "device": str(dev),
        "dtype": str(predictor.dtype).removeprefix("torch."),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "runs": runs,
        "warmup": warmup,
        "full_forward_s": statistics.median(full),
        "cached_predict_s": statistics.median(cached),
        "batch8_per_expression_s": statistics.median(batch8),
        "peak_rss_mb": peak_rss,
        "full_forward": _stats(full),
        "cached_predict": _stats(cached),
        "batch8_per_expression": _stats(batch8),
        "stages": {"preprocess": _stats(pre), "image_encoder": _stats(enc), "decode_text_dependent": _stats(dec)},
        "num_params": sum(p.numel() for p in model.parameters()),
    }
    if dev.type == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["load"]:  # start-up benchmark: python -m deris_core.bench load --help
        from .bench_load import main as load_main

        return load_main(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m deris_core.bench", description="DeRIS predictor benchmark")
    ap.add_argument("--config", default="deris-b-grefcoco")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="weights and activations")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    configure_from_env()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        predictor, fixed = build(args.config, args.device, args.dtype)
        r = run(predictor, fixed, args.runs, args.warmup)
    except Exception as exc:  # noqa: BLE001
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(r))
        return 0
    _print_forward(r)
    return 0


def _print_forward(r: dict) -> None:
    print(f"{r['config']} on {r['device']} ({r['dtype']}, {r['torch_threads']} threads, torch {r['torch_version']}), "
          f"{r['runs']} runs after {r['warmup']} warm-up; seconds as median [min, max]")

    def line(name: str, s: dict) -> None:
        print(f"  {name:<34} {s['median_s']:.4f}  [{s['min_s']:.4f}, {s['max_s']:.4f}]")

    line("full: set_image + predict", r["full_forward"])
    line("predict on cached image", r["cached_predict"])
    line("predict_batch(8), per expression", r["batch8_per_expression"])
    for k, v in r["stages"].items():
        line(f"  stage: {k}", v)
    print(f"  peak RSS {r['peak_rss_mb']:.0f} MiB" + (f", peak CUDA {r['peak_cuda_mb']:.0f} MiB" if "peak_cuda_mb" in r else ""))


if __name__ == "__main__":
    sys.exit(main())
