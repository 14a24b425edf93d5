"""Start-up benchmark: loading an official checkpoint the first time and afterwards.

    python -m deris_core.tools.bench load --config deris-l-grefcoco [--dir /tmp/deris_load_bench] [--json]

Writes a checkpoint with random weights in the authors' layout (``{"state_dict": ...}`` with
official key names, fp32, ``torch.save``) and a small tokenizer next to it, then measures, each in
a fresh process: the plain path (unpickle, build the model, copy the weights in: what every start
did before the cache), the first ``load_predictor`` (unpickle + write the safetensors copy) and a
later ``load_predictor`` (memory-mapped copy). For each: load time, load + first prediction, and
peak resident memory. Needs about twice the checkpoint size on disk (DeRIS-L: 2 x 3.1 GB).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .. import env
from ..checkpoint import to_official_state_dict
from ..config import get_config
from ..model import build_deris

log = logging.getLogger(__name__)


def write_random_official(cfg_name: str, out: Path, seed: int = 0) -> Path:
    """A checkpoint of ``cfg_name`` with random weights, saved as the authors save theirs."""
    from ..tokenizer import train_sentencepiece

    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{cfg_name}-random.pth"
    if not path.is_file():
        model = build_deris(get_config(cfg_name), device="meta")
        gen = torch.Generator().manual_seed(seed)
        state = {k: torch.randn(v.shape, generator=gen) * 0.02 if v.is_floating_point() else torch.zeros(v.shape, dtype=v.dtype)
                 for k, v in model.state_dict().items()}
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"state_dict": to_official_state_dict(state), "meta": {"epoch": 0}}, tmp)
        os.replace(tmp, path)
    tok = out / "beit3.spm"
    if not tok.is_file():
        train_sentencepiece(["the orange cat lying down", "a red car on the left", "two dogs"] * 5, out / "beit3", vocab_size=40)
    return path


def _child(mode: str, weights: str, config: str) -> dict:
    """One measured start in this (fresh) process."""
    t0 = time.perf_counter()
    if mode == "plain":
        from ..checkpoint import convert_official_state_dict, extract_state_dict, load_into, safe_torch_load
        from ..predictor import Predictor
        from ..tokenizer import BEiT3Tokenizer
        state = extract_state_dict(safe_torch_load(weights))
        cfg = get_config(config)
        model = build_deris(cfg)
        load_into(model, convert_official_state_dict(state), cfg.name, "bench")
        del state
        predictor = Predictor(model, BEiT3Tokenizer(Path(weights).with_name("beit3.spm"), cfg.max_token),
                              device=torch.device("cpu"))
    else:
        from ..weights import load_predictor

        predictor = load_predictor(weights, device="cpu", config=config)
    t1 = time.perf_counter()
    image = np.random.default_rng(0).integers(0, 256, (300, 451, 3), dtype=np.uint8)
    predictor.predict("the orange cat", image=predictor.set_image(image))
    t2 = time.perf_counter()
    return {"load_s": t1 - t0, "load_and_first_predict_s": t2 - t0,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _measure(mode: str, weights: Path, cache: Path, config: str) -> dict:
    child = env.child_env({"DERIS_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    r = subprocess.run([sys.executable, "-m", "deris_core.tools.bench_load", "--child", mode, str(weights), config],
                       capture_output=True, text=True, env=child)
    if r.returncode:
        raise RuntimeError(f"{mode} start failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run(config: str, folder: Path, keep: bool) -> dict:
    t0 = time.perf_counter()
    weights = write_random_official(config, folder)
    made = time.perf_counter() - t0
    cache = folder / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    result = {"config": config, "checkpoint_mb": weights.stat().st_size / 2**20, "write_checkpoint_s": made,
              "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
              "loadavg_before": Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None}
    result["plain"] = _measure("plain", weights, cache, config)
    result["first"] = _measure("cached", weights, cache, config)
    result["later"] = _measure("cached", weights, cache, config)
    result["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deris_core.tools.bench load", description="checkpoint start-up benchmark")
    ap.add_argument("--config", default="deris-l-grefcoco")
    ap.add_argument("--dir", default="/tmp/deris_load_bench", help="where the random checkpoint and its copy go")
    ap.add_argument("--keep", action="store_true", help="keep the files for another run")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "WEIGHTS", "CONFIG"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(*args.child)))
        return 0
    try:
        r = run(args.config, Path(args.dir), args.keep)
    except Exception as exc:  # noqa: BLE001 - the command's last resort: one line on stderr, the traceback at DEBUG
        log.debug("failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"{r['config']}: random checkpoint in the official layout, {r['checkpoint_mb']:.0f} MiB "
          f"(torch {r['torch_version']}, {r['torch_threads']} threads, load average {r['loadavg_before']} -> {r['loadavg_after']})")
    for key, label in (("plain", "unpickle + build + copy (every start before)"),
                       ("first", "first load_predictor (writes the copy)"),
                       ("later", "later load_predictor (memory-mapped)")):
        m = r[key]
        print(f"  {label:<46} load {m['load_s']:7.2f} s   load + first predict {m['load_and_first_predict_s']:7.2f} s"
              f"   peak RSS {m['peak_rss_mb']:6.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
