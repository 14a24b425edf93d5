"""SAM and SAM 2 speed on this CPU with random weights: ``python -m app.refine.speed``.

Speed does not depend on the weights' values, so the architectures are built from their configs with
random weights (no download): SAM ViT-B (``SamConfig()``'s defaults, as ``facebook/sam-vit-base``) and
SAM 2.1's Hiera tiny / small / base-plus (``Sam2Config`` with the backbones of
``facebook/sam2.1-hiera-*``). For each model and precision it prints the image embedding time (the
per-image work: preprocessing and the image encoder) and one click's time (prompt encoder, mask
decoder and the chosen mask at the image's size) at 1024x768, wall and CPU time (the process's, all
threads: on a shared machine the wall time includes waiting for a core), with the CPU, the threads and
the load average. SAM runs through :class:`app.refine.sam.SamRefiner`, SAM 2 through
:class:`app.refine.sam2.Sam2Refiner` (what the studio runs with ``--refiner sam:`` / ``sam2:``).

``--tiny`` builds tiny configs instead (the tests' check that the command runs; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

MODELS = ("sam-vit-b", "sam2-tiny", "sam2-small", "sam2-base-plus")

# SAM 2.1 Hiera backbones (facebook/sam2.1-hiera-*/config.json); the rest of Sam2Config is shared
HIERA = {
    "sam2-tiny": dict(hidden_size=96, num_attention_heads=1, blocks_per_stage=[1, 2, 7, 2],
                      embed_dim_per_stage=[96, 192, 384, 768], global_attention_blocks=[5, 7, 9],
                      window_positional_embedding_background_size=[7, 7]),
    "sam2-small": dict(hidden_size=96, num_attention_heads=1, blocks_per_stage=[1, 2, 11, 2],
                       embed_dim_per_stage=[96, 192, 384, 768], global_attention_blocks=[7, 10, 13],
                       window_positional_embedding_background_size=[7, 7]),
    "sam2-base-plus": dict(hidden_size=112, num_attention_heads=2, blocks_per_stage=[2, 3, 16, 3],
                           embed_dim_per_stage=[112, 224, 448, 896], global_attention_blocks=[12, 16, 20],
                           window_positional_embedding_background_size=[14, 14]),
}


def sam_model(tiny: bool = False):
    """(SamModel with random weights, SamProcessor): ViT-B, or a 2-layer 32-wide model at side 256."""
    from transformers import SamConfig, SamModel, SamProcessor
    from transformers.models.sam import SamImageProcessor

    if not tiny:
        return SamModel(SamConfig()), SamProcessor(SamImageProcessor())
    side = 256
    cfg = SamConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=side, patch_size=16,
                           output_channels=32, window_size=4, global_attn_indexes=[1], mlp_dim=64, num_pos_feats=16),
        prompt_encoder_config=dict(hidden_size=32, image_size=side, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2,
                                 iou_head_hidden_dim=32))
    proc = SamProcessor(SamImageProcessor(size={"longest_edge": side}, pad_size={"height": side, "width": side}))
    return SamModel(cfg), proc


def sam2_model(name: str, tiny: bool = False):
    """(Sam2Model with random weights, input side): a SAM 2.1 Hiera backbone, or a tiny one."""
    from transformers import Sam2Config, Sam2Model

    if not tiny:
        hiera = HIERA[name]
        vision = dict(backbone_config=dict(model_type="sam2_hiera_det_model", **hiera),
                      backbone_channel_list=list(reversed(hiera["embed_dim_per_stage"])))
        return Sam2Model(Sam2Config(vision_config=vision)), 1024
    side = 256
    hiera = dict(model_type="sam2_hiera_det_model", hidden_size=16, num_attention_heads=1, blocks_per_stage=[1, 1, 2, 1],
                 embed_dim_per_stage=[16, 32, 64, 128], num_attention_heads_per_stage=[1, 1, 2, 2],
                 window_size_per_stage=[4, 4, 4, 4], global_attention_blocks=[3], image_size=[side, side],
                 window_positional_embedding_background_size=[4, 4])
    vision = dict(backbone_config=hiera, backbone_channel_list=[128, 64, 32, 16], fpn_hidden_size=32,
                  backbone_feature_sizes=[[side // 4] * 2, [side // 8] * 2, [side // 16] * 2])
    cfg = Sam2Config(vision_config=vision,
                     prompt_encoder_config=dict(hidden_size=32, image_size=side, patch_size=16, mask_input_channels=4),
                     mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2,
                                              iou_head_hidden_dim=32))
    return Sam2Model(cfg), side


class SamClicks:
    """SAM / SAM 2 as the studio runs them (SamRefiner / Sam2Refiner): ``embed`` is ``set_image`` (a new key
    each time: no cache), ``click`` one point (three masks, the best by predicted IoU upsampled)."""

    def __init__(self, refiner) -> None:
        self.refiner = refiner
        self._n = 0

    def embed(self, image: np.ndarray):
        self._n += 1
        return self.refiner.set_image(image, key=f"speed-{self._n}")

    def click(self, state, x: float, y: float) -> np.ndarray:
        return self.refiner.refine(state, [(x, y)], [1]).mask


def parameters(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def measure(name: str, dtype: torch.dtype, image: np.ndarray, embeds: int, clicks: int, tiny: bool,
            threads: int = 2) -> dict:
    """Embedding seconds (each of ``embeds`` runs; the first includes warm-up) and per-click ms (median of ``clicks``
    after one warm-up click) for one model in one precision."""
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    if name == "sam-vit-b":
        from .sam import SamRefiner

        model, proc = sam_model(tiny)
        runner = SamClicks(SamRefiner(model, proc, "cpu", dtype, cache_images=1))
    else:
        from .sam2 import Sam2Refiner

        model, side = sam2_model(name, tiny)
        runner = SamClicks(Sam2Refiner(model, side, "cpu", dtype, cache_images=1))
    params = parameters(model)
    emb_s, emb_cpu, state = [], [], None
    for _ in range(embeds):
        c0, t0 = time.process_time(), time.perf_counter()
        state = runner.embed(image)
        emb_s.append(time.perf_counter() - t0)
        emb_cpu.append(time.process_time() - c0)
    h, w = image.shape[:2]
    rng = np.random.default_rng(0)
    xy = [(float(rng.uniform(0, w - 1)), float(rng.uniform(0, h - 1))) for _ in range(clicks + 1)]
    click_ms, click_cpu = [], []
    for i, (x, y) in enumerate(xy):
        c0, t0 = time.process_time(), time.perf_counter()
        mask = runner.click(state, x, y)
        if i:  # the first click warms up
            click_ms.append((time.perf_counter() - t0) * 1000)
            click_cpu.append((time.process_time() - c0) * 1000)
        assert mask.shape == (h, w)
    return {"model": name, "dtype": "bf16" if dtype == torch.bfloat16 else "fp32", "params_m": params,
            "embedding_s": emb_s, "embedding_cpu_s": emb_cpu, "click_ms": statistics.median(click_ms),
            "click_ms_min": min(click_ms), "click_cpu_ms": statistics.median(click_cpu), "click_ms_all": click_ms}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(prog="python -m app.refine.speed", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    ap.add_argument("--dtypes", default="fp32,bf16", help="fp32, bf16 (bf16 only where oneDNN computes it on this CPU)")
    ap.add_argument("--size", default="1024x768", help="the image, WxH")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--embeds", type=int, default=2, help="embeddings per model (the first includes warm-up)")
    ap.add_argument("--clicks", type=int, default=5, help="timed clicks per model (median), after one warm-up click")
    ap.add_argument("--tiny", action="store_true", help="tiny configs: checks that the command runs, figures mean nothing")
    args = ap.parse_args(argv)
    from deris_core.hardware import cpu_info

    threads_before = torch.get_num_threads()
    w, h = (int(v) for v in args.size.lower().split("x"))
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), np.uint8)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in names:
        if m not in MODELS:
            ap.error(f"unknown model {m!r}: use {', '.join(MODELS)}")
    info = cpu_info()
    dtypes = []
    for d in (d.strip() for d in args.dtypes.split(",") if d.strip()):
        if d == "bf16" and not info.onednn_bf16:
            print("bf16 skipped: oneDNN does not compute bf16 on this CPU")
            continue
        dtypes.append({"fp32": torch.float32, "bf16": torch.bfloat16}[d])
    import transformers

    load0 = os.getloadavg()
    print(f"CPU: {info.summary()}; threads {args.threads}; torch {torch.__version__}, transformers "
          f"{transformers.__version__}; image {w}x{h}; random weights{' (TINY configs)' if args.tiny else ''}")
    print(f"load average at the start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    print("| model | params | precision | embedding, wall s (each run; the first warms up) | embedding, CPU s "
          "(all threads) | one click, wall ms (median / min) | one click, CPU ms (median) |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for m in names:
        for dt in dtypes:
            try:
                r = measure(m, dt, image, args.embeds, args.clicks, args.tiny, args.threads)
            finally:
                torch.set_num_threads(threads_before)
            rows.append(r)
            emb = " / ".join(f"{s:.2f}" for s in r["embedding_s"])
            cpu = " / ".join(f"{s:.2f}" for s in r["embedding_cpu_s"])
            print(f"| {m} | {r['params_m']:.1f} M | {r['dtype']} | {emb} | {cpu} | {r['click_ms']:.0f} / "
                  f"{r['click_ms_min']:.0f} | {r['click_cpu_ms']:.0f} |", flush=True)
    load1 = os.getloadavg()
    print(f"load average at the end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
