"""Where a forward pass's arithmetic goes, and the machine's measured peak for it.

    python -m deris_core.tools.bench flops --config deris-b-grefcoco [--threads 2] [--json]

Counts the floating-point operations of one ``set_image`` (the image part) and one ``predict``
(the text part) by kind (linear layers, convolutions, attention, other matrix products), with
random weights on the benchmark's 300x451 image and 7-token expression, and measures this
machine's throughput on a linear layer of the size the network spends its time in (600x768 by
768x3072) in fp32 (oneDNN, packed) and int8 (PyTorch's dynamic quantized kernels). Their ratio
is the floor of what the GEMMs alone cost, which says how far a precision can take a model on
this CPU: the rest (norms, activations, the deformable sampling, copies) comes on top.

``--profile`` also times one full forward in ``--dtype`` (default ``auto``) with the PyTorch
profiler and splits its time by kind of operation (:data:`KINDS`): how much goes to the products
and at what GFLOP/s against the measured peak in that precision, and how much to everything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from collections import Counter

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..dtypes import DTYPE_CHOICES
from ..hardware import cpu_info, int8_supported

log = logging.getLogger(__name__)


class _FlopCount(TorchDispatchMode):
    """Counts multiply-adds (x2) of the ops the network's time goes to, as they are dispatched."""

    def __init__(self) -> None:
        super().__init__()
        self.flops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        name = str(func._overloadpacket)
        if name in ("aten.linear", "aten.addmm") and isinstance(out, torch.Tensor):
            k = args[1].shape[1] if name == "aten.linear" else args[1].shape[-1]
            self.flops["linear"] += 2 * out.numel() * k
        elif name in ("aten.conv2d", "aten.convolution", "aten.mkldnn_convolution"):
            w = args[1]
            self.flops["convolution"] += 2 * out.numel() * w.shape[1] * w.shape[2] * w.shape[3]
        elif name in ("aten.scaled_dot_product_attention", "aten._scaled_dot_product_flash_attention_for_cpu"):
            q, k = args[0], args[1]
            self.flops["attention"] += 4 * q.shape[:-1].numel() * k.shape[-2] * q.shape[-1]
        elif name in ("aten.matmul", "aten.bmm", "aten.mm"):
            self.flops["other matrix products"] += 2 * out.numel() * args[0].shape[-1]
        return out


def count_flops(config: str) -> dict[str, dict[str, float]]:
    """GFLOP of the image part and the text part of ``config`` (plain F.linear, so every op is seen)."""
    from .bench_setup import build
    from ..model import layers

    predictor, fixed = build(config, "cpu", "fp32")
    for m in predictor.model.modules():
        if isinstance(m, layers.Linear):
            m.unpack_()
    saved, layers._ONEDNN = layers._ONEDNN, False
    try:
        image = np.random.default_rng(0).integers(0, 256, (300, 451, 3), dtype=np.uint8)
        ids, mask = fixed.batch(1)
        with _FlopCount() as image_part:
            state = predictor.set_image(image)
        with _FlopCount() as text_part:
            _ = predictor.predict_tokens(ids, mask, image=state)[0].union_mask  # the masks are lazy: count them too
    finally:
        layers._ONEDNN = saved
    return {part: {k: v / 1e9 for k, v in c.flops.items()} for part, c in
            (("image", image_part), ("text", text_part))}


def _near_best(fn, runs: int) -> float:
    """Seconds of ``fn`` after 5 warm-up calls: the 10th percentile of ``runs`` (near-best, not a lucky outlier)."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 10]


def gemm_peak(m: int = 600, k: int = 768, n: int = 3072, runs: int = 30) -> dict[str, float]:
    """GFLOP/s of one linear layer, fp32 (oneDNN packed) and int8 (dynamic), near-best of ``runs``."""
    x, w, b = torch.randn(m, k), torch.randn(n, k), torch.randn(n)

    def best(fn) -> float:
        return _near_best(fn, runs)

    flop = 2 * m * k * n
    out: dict[str, float] = {}
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if torch.backends.mkldnn.is_available():
            packed = torch.ops.mkldnn._reorder_linear_weight(w, m)
            out["fp32_gflops"] = flop / best(lambda: torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], "")) / 1e9
        else:
            out["fp32_gflops"] = flop / best(lambda: torch.nn.functional.linear(x, w, b)) / 1e9
        if int8_supported():
            try:
                scale = (w.abs().amax(1) / 127).double()
                q = torch.quantize_per_channel(w, scale, torch.zeros(n, dtype=torch.long), 0, torch.qint8)
                pk = torch.ops.quantized.linear_prepack(q, b)
                out["int8_gflops"] = flop / best(lambda: torch.ops.quantized.linear_dynamic(x, pk, True)) / 1e9
            except RuntimeError as exc:  # a build without these kernels after all: say so, measure the rest
                print(f"note: int8 kernels unavailable ({str(exc).splitlines()[0]})", file=sys.stderr)
    return out


# Kinds of operation, by the aten names the profiler reports (first match wins; the rest is "other").
KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("linear layers", ("mkldnn::_linear_pointwise", "aten::addmm", "aten::linear", "quantized::linear_dynamic",
                       "aten::mm")),
    ("convolutions", ("aten::mkldnn_convolution", "aten::convolution", "aten::_convolution", "aten::conv2d")),
    ("attention products", ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::bmm", "aten::baddbmm",
                            "aten::matmul")),
    ("softmax", ("aten::_softmax", "aten::softmax")),
    ("norms", ("aten::native_layer_norm", "aten::native_group_norm", "aten::native_batch_norm",
               "aten::_native_batch_norm_legit_no_training")),
    ("deformable sampling", ("aten::grid_sampler_2d", "aten::grid_sampler")),
    ("activations", ("aten::gelu", "aten::relu", "aten::sigmoid", "aten::silu", "aten::tanh", "aten::clamp_min")),
    ("copies and layout", ("aten::copy_", "aten::clone", "aten::cat", "aten::contiguous", "aten::index",
                           "aten::index_select", "aten::gather", "aten::constant_pad_nd", "aten::roll",
                           "aten::_to_copy", "aten::fill_", "aten::zero_", "aten::stack", "aten::scatter_")),
    ("element-wise arithmetic", ("aten::add", "aten::add_", "aten::mul", "aten::mul_", "aten::sub", "aten::div",
                                 "aten::div_", "aten::where", "aten::masked_fill", "aten::pow", "aten::sum",
                                 "aten::mean", "aten::max", "aten::topk", "aten::exp", "aten::log")),
)


def _kind(name: str) -> str:
    for kind, names in KINDS:
        if name in names:
            return kind
    return "other"


def profile_forward(config: str, dtype: str = "auto", runs: int = 3) -> dict:
    """Self CPU time of one full forward (``set_image`` then ``predict``) by kind of operation, the best
    of ``runs`` after one warm-up; ``total_s`` is its wall time (the profiler's overhead included)."""
    from torch.profiler import ProfilerActivity, profile

    from .bench_setup import build

    predictor, fixed = build(config, "cpu", dtype)
    image = np.random.default_rng(0).integers(0, 256, (300, 451, 3), dtype=np.uint8)
    ids, mask = fixed.batch(1)

    def forward() -> None:
        state = predictor.set_image(image)
        _ = predictor.predict_tokens(ids, mask, image=state)[0].union_mask

    forward()
    best: dict | None = None
    for _ in range(runs):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            forward()
            wall = time.perf_counter() - t0
        kinds: Counter[str] = Counter()
        for ev in prof.key_averages():
            kinds[_kind(ev.key)] += ev.self_cpu_time_total / 1e6
        if best is None or wall < best["total_s"]:
            best = {"dtype": predictor.precision.describe(), "total_s": wall, "self_cpu_s": dict(kinds)}
    assert best is not None
    return best


def bf16_gemm_peak(m: int = 600, k: int = 768, n: int = 3072, runs: int = 30) -> float | None:
    """GFLOP/s of one bf16 linear layer (oneDNN packed), or None where oneDNN has no bf16 path here."""
    if not torch.backends.mkldnn.is_available():
        return None
    x, w, b = torch.randn(m, k).bfloat16(), torch.randn(n, k).bfloat16(), torch.randn(n).bfloat16()
    try:
        with torch.inference_mode():
            packed = torch.ops.mkldnn._reorder_linear_weight(w, m)
            seconds = _near_best(lambda: torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], ""), runs)
    except RuntimeError:
        return None
    return 2 * m * k * n / seconds / 1e9


def print_profile(prof: dict, flops: dict[str, dict[str, float]], peak: dict[str, float]) -> None:
    """The profile as a table: time and share by kind, and the products' GFLOP/s against the peak."""
    cpu = prof["self_cpu_s"]
    total = sum(cpu.values())
    print(f"\nfull forward in {prof['dtype']}: {prof['total_s'] * 1000:.0f} ms wall, {total * 1000:.0f} ms of CPU "
          f"time in operations")
    print(f"  {'kind':<26}{'CPU ms':>9}{'share':>8}")
    for kind, s in sorted(cpu.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:<26}{s * 1000:>9.1f}{s / total:>8.1%}")
    linear = sum(k.get("linear", 0.0) for k in flops.values())
    products = linear + sum(k.get("other matrix products", 0.0) + k.get("attention", 0.0) for k in flops.values())
    allflop = sum(sum(k.values()) for k in flops.values())
    key = {"bf16": "bf16_gflops", "int8": "int8_gflops"}.get(prof["dtype"].split()[0], "fp32_gflops")
    lin_s = cpu.get("linear layers", 0.0)
    if lin_s:
        print(f"  linear layers: {linear:.1f} GFLOP in {lin_s * 1000:.0f} ms of CPU = {linear / lin_s:.0f} GFLOP/s of CPU "
              f"time" + (f" (one {key.split('_')[0]} GEMM measures {peak[key]:.0f} GFLOP/s over the same threads)"
                         if key in peak else ""))
    print(f"  whole forward: {allflop:.1f} GFLOP ({products:.1f} in products) in {prof['total_s'] * 1000:.0f} ms = "
          f"{allflop / prof['total_s']:.0f} GFLOP/s of wall time"
          + (f", {allflop / prof['total_s'] / peak[key]:.0%} of the GEMM peak" if key in peak else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deris_core.tools.bench flops", description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="deris-b-grefcoco")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile", action="store_true", help="also time a full forward by kind of operation")
    ap.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help="the precision --profile times")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        flops = count_flops(args.config)
    except Exception as exc:  # noqa: BLE001 - the command's last resort: one line on stderr, the traceback at DEBUG
        log.debug("failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    peak = gemm_peak()
    bf16 = bf16_gemm_peak()
    if bf16 is not None:
        peak["bf16_gflops"] = bf16
    info = cpu_info()
    r = {"config": args.config, "cpu": info.summary(), "threads": args.threads, "gflop": flops, "peak": peak}
    if args.profile:
        r["profile"] = profile_forward(args.config, args.dtype)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"CPU: {r['cpu']}; {args.threads} threads")
    total = 0.0
    for part, kinds in flops.items():
        s = sum(kinds.values())
        total += s
        print(f"{args.config} {part} part: {s:.1f} GFLOP (" + ", ".join(f"{k} {v:.1f}" for k, v in
                                                             sorted(kinds.items(), key=lambda kv: -kv[1])) + ")")
    linear = sum(kinds.get("linear", 0.0) for kinds in flops.values())
    print(f"full forward: {total:.1f} GFLOP, {linear:.1f} of them in linear layers")
    for name, key in (("fp32", "fp32_gflops"), ("int8", "int8_gflops")):  # bf16 below
        if key in peak:
            print(f"  {name} linear layer: {peak[key]:.0f} GFLOP/s measured -> the linear layers alone take at "
                  f"least {linear / peak[key]:.3f} s")
    if "bf16_gflops" in peak:
        print(f"  bf16 linear layer: {peak['bf16_gflops']:.0f} GFLOP/s measured (oneDNN; emulated where the CPU has no "
              f"bf16 instructions) -> at least {linear / peak['bf16_gflops']:.3f} s")
    if args.profile:
        print_profile(r["profile"], flops, peak)
    return 0


if __name__ == "__main__":
    sys.exit(main())
