"""Benchmark the predictor (random weights are fine: speed does not depend on them).

    python -m deris_core.tools.bench --config deris-b-grefcoco --device cpu [--dtype fp32|bf16|auto] [--runs 5] [--warmup 2] [--json]
    python -m deris_core.tools.bench load --config deris-l-grefcoco     # start-up time (deris_core/tools/bench_load.py)
    python -m deris_core.tools.bench flops --config deris-b-grefcoco    # GFLOP per part vs the measured GEMM peak

Prints, for batch 1: full ``set_image`` + ``predict`` latency, ``predict`` on a cached image,
per-stage times, ``predict_batch`` of 8 expressions (time per expression) and peak memory (after
the single-expression runs, the official protocol's work, and again after the batches of 8);
median / min / max over the timed runs after warm-up. Mirrors the conditions of the
official CPU timings: a 300x451 image, 7 real tokens padded to ``max_token``.

``--dtype bf16`` runs the whole network in bfloat16 where the CPU computes it natively
(else fp32, with a note); ``--dtype auto`` is what the studio and the CLIs take by default.
The studio's own latency (Enter -> overlay) is an app benchmark, ``python -m app.bench latency``
(the core imports nothing of the app).

Every report names the CPU (model, PyTorch's kernel level, the notable flags) and the precision
that actually ran, and compares with the official code's timings for the same kind of CPU
(``official_cpu_timings.json`` on AVX-512 machines, ``official_cpu_timings_avx2.json`` on
AVX2-only ones, from ``DERIS_REFERENCE`` or ``../shared/reference``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import sys
import time

import numpy as np
import torch

from .. import env
from .bench_setup import FixedIds, build
from ..hardware import DTYPE_CHOICES, CpuInfo, Precision, cpu_info
from ..predictor import Predictor
from ..runtime import configure_from_env

log = logging.getLogger(__name__)


def _peak_rss_mb() -> float:
    """The process's peak resident memory so far (``ru_maxrss``, as the official timings report it)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _stats(values: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values), "runs": values}


# Our configs -> the model names of the official timings files.
_REFERENCE_MODELS = {"deris-b-grefcoco": "DERIS-B-grefcoco", "deris-l-grefcoco": "DERIS-L-grefcoco",
                     "deris-b-refcoco": "DERIS-B-grefcoco", "deris-l-refcoco": "DERIS-L-grefcoco"}
_REFERENCE_FILES = {"avx512": "official_cpu_timings.json", "avx2": "official_cpu_timings_avx2.json"}


def reference_timings(info: CpuInfo, config: str) -> dict | None:
    """The official code's timings of ``config`` on this kind of CPU, or None (unknown kind or file).

    Returns ``{"file", "cpu_kind", "full_forward_s", "peak_rss_mb"}``."""
    name = _REFERENCE_FILES.get(info.kind)
    model = _REFERENCE_MODELS.get(config)
    if name is None or model is None:
        return None
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
    folders = [env.get("DERIS_REFERENCE") or "", os.path.join(here, "..", "shared", "reference")]
    for folder in folders:
        path = os.path.join(folder, name)
        if folder and os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                entry = json.load(f).get("models", {}).get(model)
            if entry:
                return {"file": name, "cpu_kind": info.kind, "full_forward_s": entry["full_forward_test"]["median_s"],
                        "peak_rss_mb": entry["peak_rss_MiB"]}
    return None


def run(predictor: Predictor, fixed: FixedIds, runs: int, warmup: int) -> dict:
    """Forward-pass figures (see the module docstring)."""
    dev, cfg, model = predictor.device, predictor.cfg, predictor.model
    image = np.random.default_rng(0).integers(0, 256, size=(300, 451, 3), dtype=np.uint8)
    ids1, mask1 = fixed.batch(1)
    ids8, mask8 = fixed.batch(8)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    # Phase 1 is the official protocol's work (the model built, then single-expression forwards):
    # its peak RSS is the one compared with the official figure. Phase 2, batches of 8 expressions,
    # goes beyond that protocol, so its (higher) peak is reported apart.
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
        if i >= warmup:
            full.append(t1 - t0)
            cached.append(t2 - t1)
            pre.append(state.timings["preprocess"])
            enc.append(state.timings["image_encoder"])
            dec.append(p.timings["decode"])
    peak_rss = _peak_rss_mb()
    for i in range(warmup + runs):
        sync()
        t0 = time.perf_counter()
        ps = predictor.predict_tokens(ids8, mask8, image=state)
        for q in ps:
            _ = q.union_mask
        sync()
        if i >= warmup:
            batch8.append((time.perf_counter() - t0) / 8)
    peak_rss_batch8 = _peak_rss_mb()
    precision: Precision = predictor.precision
    info = cpu_info()
    result = {
        "config": cfg.name,
        "device": str(dev),
        "dtype": str(predictor.dtype).removeprefix("torch."),
        "precision": precision.as_dict(),
        "cpu": {"name": info.name, "arch": info.arch, "kind": info.kind, "torch_kernels": info.isa,
                "flags": list(info.flags), "onednn_max_isa": info.onednn_max_isa},
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "runs": runs,
        "warmup": warmup,
        "full_forward_s": statistics.median(full),
        "cached_predict_s": statistics.median(cached),
        "batch8_per_expression_s": statistics.median(batch8),
        "peak_rss_mb": peak_rss,
        "peak_rss_with_batch8_mb": peak_rss_batch8,
        "full_forward": _stats(full),
        "cached_predict": _stats(cached),
        "batch8_per_expression": _stats(batch8),
        "stages": {"preprocess": _stats(pre), "image_encoder": _stats(enc), "decode_text_dependent": _stats(dec)},
        "num_params": sum(p.numel() for p in model.parameters()),
    }
    if dev.type == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    ref = reference_timings(info, cfg.name) if dev.type == "cpu" else None
    if ref:
        ref["full_forward_ratio"] = result["full_forward_s"] / ref["full_forward_s"]
        ref["cached_predict_ratio"] = result["cached_predict_s"] / ref["full_forward_s"]
        ref["peak_rss_ratio"] = peak_rss / ref["peak_rss_mb"]
    result["official"] = ref
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["load"]:  # start-up benchmark: python -m deris_core.tools.bench load --help
        from .bench_load import main as load_main

        return load_main(argv[1:])
    if argv[:1] == ["flops"]:  # arithmetic per part and the machine's GEMM peak: deris_core/tools/bench_flops.py
        from .bench_flops import main as flops_main

        return flops_main(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m deris_core.tools.bench", description="DeRIS predictor benchmark")
    ap.add_argument("--config", default="deris-b-grefcoco")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--dtype", default="fp32", choices=list(DTYPE_CHOICES),
                    help="precision request (fp32 by default, for comparable figures; auto = the CLIs' default)")
    ap.add_argument("--no-fallback", action="store_true",
                    help="with --dtype bf16: run bf16 even where the CPU only emulates it (measures why it falls back)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    configure_from_env()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        predictor, fixed = build(args.config, args.device, args.dtype, fallback=not args.no_fallback)
        r = run(predictor, fixed, args.runs, args.warmup)
    except Exception as exc:  # noqa: BLE001 - the command's last resort: one line on stderr, the traceback at DEBUG
        log.debug("failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(r))
        return 0
    _print_forward(r)
    return 0


def _print_forward(r: dict) -> None:
    c, pr = r["cpu"], r["precision"]
    load = " ".join(f"{x:.2f}" for x in r["loadavg"]) if r.get("loadavg") else "n/a"
    print(f"CPU: {c['name']} ({c['arch']}, kind {c['kind']}, PyTorch kernels {c['torch_kernels']}"
          + (f", ONEDNN_MAX_CPU_ISA={c['onednn_max_isa']}" if c["onednn_max_isa"] else "")
          + f"; flags: {' '.join(c['flags']) or 'none of note'}); load average {load}")
    print(f"precision: {pr['dtype']} ({pr['kernels']}), asked {pr['requested']}: {pr['reason']}")
    print(f"{r['config']} on {r['device']} ({r['dtype']}, {r['torch_threads']} threads, torch {r['torch_version']}), "
          f"{r['runs']} runs after {r['warmup']} warm-up; seconds as median [min, max]")

    def line(name: str, s: dict) -> None:
        print(f"  {name:<34} {s['median_s']:.4f}  [{s['min_s']:.4f}, {s['max_s']:.4f}]")

    line("full: set_image + predict", r["full_forward"])
    line("predict on cached image", r["cached_predict"])
    line("predict_batch(8), per expression", r["batch8_per_expression"])
    for k, v in r["stages"].items():
        line(f"  stage: {k}", v)
    print(f"  peak RSS {r['peak_rss_mb']:.0f} MiB (build + single-expression forwards, the official protocol; "
          f"{r['peak_rss_with_batch8_mb']:.0f} MiB after the batches of 8)" + (f", peak CUDA {r['peak_cuda_mb']:.0f} MiB" if "peak_cuda_mb" in r else ""))
    ref = r.get("official")
    if ref:
        print(f"  vs the official code on this kind of CPU ({ref['file']}: {ref['full_forward_s']:.3f} s, "
              f"{ref['peak_rss_mb']:.0f} MiB): full {ref['full_forward_ratio']:.2f}x, cached re-query "
              f"{ref['cached_predict_ratio']:.3f}x, peak RSS {ref['peak_rss_ratio']:.2f}x")
    elif r["device"] == "cpu":
        print(f"  no official timings for {r['config']} on a CPU of kind {c['kind']} (see DERIS_REFERENCE)")


if __name__ == "__main__":
    sys.exit(main())
