"""``python -m deris_core.train``: train DeRIS on a gRefCOCO-format dataset (single process or torchrun)."""

from __future__ import annotations

import argparse
import sys

import torch.distributed as dist

from .losses import LossConfig
from ..data.nsc import NSCConfig
from .trainer import TrainConfig, train


def main(argv: list[str] | None = None) -> int:
    d = TrainConfig(data="", out="")
    p = argparse.ArgumentParser(prog="python -m deris_core.train", description=main.__doc__ or __doc__)
    p.add_argument("--data", required=True, help="gRefCOCO-layout folder (e.g. from python -m deris_core.tools.synthetic)")
    p.add_argument("--out", required=True, help="run folder: weights, tokenizer, log.jsonl, resume state")
    p.add_argument("--model", default=d.model, help="config preset (deris-small, deris-b-grefcoco, ...)")
    p.add_argument("--tokenizer", default=None, help="sentencepiece model (default: train one on the data)")
    p.add_argument("--vocab-size", type=int, default=d.vocab_size)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="expressions per step, all processes together (split over processes)")
    p.add_argument("--expressions-per-image", type=int, default=d.expressions_per_image,
                   help="batch K expressions of one image together and encode the image once (default 1: "
                        "samples drawn independently); a step then holds batch-size/K images")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--beit3-lr-mult", type=float, default=d.beit3_lr_mult)
    p.add_argument("--backbone-lr-mult", type=float, default=d.backbone_lr_mult)
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    p.add_argument("--clip-grad", type=float, default=d.clip_grad)
    p.add_argument("--no-amp", action="store_true", help="fp32 on CUDA (AMP is bf16 autocast)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--eval-split", default=d.eval_split, help="split evaluated after each epoch ('' for none)")
    p.add_argument("--eval-limit", type=int, default=None)
    p.add_argument("--no-loopback", action="store_true", help="ablation: one-way perception -> cognition")
    p.add_argument("--no-nsc", action="store_true", help="ablation: no non-referent sample conversion")
    p.add_argument("--nsc-rate", type=float, default=NSCConfig.rate)
    p.add_argument("--nsc-threshold", type=float, default=NSCConfig.threshold)
    p.add_argument("--nsc-min-words", type=int, default=NSCConfig.min_text_length)
    p.add_argument("--init-beit3", default=None, help="public BEiT-3 checkpoint to start the cognition encoder from")
    p.add_argument("--init-swin", default=None, help="Mask2Former-Swin checkpoint to start the perception branch from")
    p.add_argument("--attribute-loss", type=float, default=LossConfig.attributes,
                   help="weight of the training-only appearance labels on the queries (0: off)")
    p.add_argument("--mlm-loss", type=float, default=LossConfig.mlm,
                   help="weight of the training-only masked language modelling on the cognition encoder (0: off)")
    p.add_argument("--box-l1", type=float, default=LossConfig.box_l1,
                   help="weight of the box L1 loss (official 0.1)")
    p.add_argument("--box-giou", type=float, default=LossConfig.box_giou,
                   help="weight of the box GIoU loss (official 0.1)")
    p.add_argument("--vision-pos-sincos", action="store_true",
                   help="add a 2-D sine-cosine table to BEiT-3's vision position embeddings, once per run folder "
                        "(training from scratch: the learnt table stays too small to carry positions, see docs/training.md)")
    p.add_argument("--log-every", type=int, default=d.log_every)
    a = p.parse_args(argv)
    cfg = TrainConfig(
        data=a.data, out=a.out, model=a.model, tokenizer=a.tokenizer, vocab_size=a.vocab_size, epochs=a.epochs,
        max_steps=a.max_steps, batch_size=a.batch_size, expressions_per_image=a.expressions_per_image, lr=a.lr,
        weight_decay=a.weight_decay,
        beit3_lr_mult=a.beit3_lr_mult, backbone_lr_mult=a.backbone_lr_mult, warmup_steps=a.warmup_steps,
        clip_grad=a.clip_grad, amp=not a.no_amp, seed=a.seed, device=a.device, threads=a.threads, workers=a.workers,
        eval_split=a.eval_split or None, eval_limit=a.eval_limit, loopback=not a.no_loopback, nsc_enabled=not a.no_nsc,
        nsc=NSCConfig(rate=a.nsc_rate, threshold=a.nsc_threshold, min_text_length=a.nsc_min_words),
        init_beit3=a.init_beit3, init_swin=a.init_swin, log_every=a.log_every, vision_pos_sincos=a.vision_pos_sincos,
        loss=LossConfig(attributes=a.attribute_loss, mlm=a.mlm_loss, box_l1=a.box_l1, box_giou=a.box_giou),
    )
    try:
        path = train(cfg)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()  # before exit: gloo torn down by the exit itself can abort
    print(f"weights: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
