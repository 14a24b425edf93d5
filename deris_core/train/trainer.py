"""The training loop: AdamW, warm-up + cosine schedule, gradient clipping, AMP on CUDA,
checkpoint save/resume, DistributedDataParallel under ``torchrun``, JSONL metrics log.

``python -m deris_core.train --data DIR --out RUN`` trains on a gRefCOCO-format folder (the
synthetic set, or gRefCOCO itself); see ``--help``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from .. import env
from ..checkpoint import load_weights, safe_torch_load, save_weights
from ..config import DeRISConfig, get_config
from ..data.refer import ReferDataset, load_grefcoco
from ..data.training import Batch, Rotation, TrainingSet, collate
from ..model import build_deris
from ..model.deris import DeRIS
from ..tokenizer import BEiT3Tokenizer, train_sentencepiece
from ..data.attributes import AttributeHead, reduce_gradients
from .budget import PROBE_STEPS, TimeBudget  # noqa: F401 - PROBE_STEPS: the name callers knew
from .losses import LossConfig, class_weight_sum, deris_loss
from .mlm import MaskedLanguageHead, masked_language_loss
from ..data.nsc import NonReferentConversion, NSCConfig


@dataclass
class TrainConfig:
    data: str
    out: str
    model: str = "deris-small"
    tokenizer: str | None = None  # sentencepiece model; None: train one on the training sentences
    vocab_size: int = 256  # of a tokenizer trained here
    split: str = "train"
    eval_split: str | None = "val"
    epochs: int = 10
    max_steps: int | None = None  # stop early (tests, smoke runs)
    max_seconds: float | None = None  # a time budget instead: the schedule's length follows the measured speed (.budget)
    batch_size: int = 16  # expressions per optimisation step (all processes together)
    expressions_per_image: int = 1  # >1: batches hold groups of expressions sharing an image
    lr: float = 1e-4
    weight_decay: float = 0.05
    beit3_lr_mult: float = 1.0  # official recipe with pretrained BEiT-3: 0.5
    backbone_lr_mult: float = 1.0  # official recipe with pretrained Swin: 0.1
    warmup_steps: int = 200
    clip_grad: float = 0.15
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    workers: int = 0
    loopback: bool = True
    nsc: NSCConfig = field(default_factory=NSCConfig)
    nsc_enabled: bool = True
    loss: LossConfig = field(default_factory=LossConfig)
    init_beit3: str | None = None
    init_swin: str | None = None
    log_every: int = 50
    eval_limit: int | None = None
    vision_pos_sincos: bool = False  # add a 2-D sine-cosine table to BEiT-3's vision positions (once per run folder)
    progress: bool = True  # one progress bar for the whole run (steps, ETA) on standard error

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)


def init_weights(model: DeRIS) -> None:
    """Fresh-model initialisation: truncated normal 0.02 for linears and embeddings (as BEiT and
    DETR) except BEiT-3's word embeddings (unit normal, see below). The pixel decoder keeps its
    own Deformable-DETR initialisation (sampling offsets spread on a grid, zero attention
    weights), which the constructor already applied."""
    keep = {id(m) for m in model.perception.pixel_decoder.modules()}
    for m in model.modules():
        if id(m) in keep:
            continue
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.trunc_normal_(m.weight, std=0.02)
    # BEiT-3's residual branches end in a sub-LN followed by the output projection, so at this
    # init each branch adds ~2.6 of norm (64-1024 wide) while a 0.02 token embedding has ~0.2:
    # after one layer the words are lost in the image-dependent part (two different nouns gave
    # cosine 0.9999 after layer 1 in our first from-scratch run) and nothing can learn to tell
    # them apart. Unit-variance word embeddings keep the token identity dominant at the start.
    nn.init.normal_(model.cognition.beit3.text_embed.weight, std=1.0)


def sincos_positions(grid: int, dim: int) -> Tensor:
    """2-D sine-cosine table ``[grid * grid, dim]``, rows in raster order: the first half of the
    channels encodes the row, the second half the column; every row has norm ``sqrt(dim / 2)``."""
    quarter = dim // 4
    if quarter * 4 != dim:
        raise ValueError(f"the embedding width must be a multiple of 4, got {dim}")
    freq = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                                indexing="ij")
    parts = []
    for coord in (rows.flatten(), cols.flatten()):
        angle = coord[:, None] * freq[None]
        parts += [angle.sin(), angle.cos()]
    return torch.cat(parts, dim=1).float()


@torch.no_grad()
def add_vision_sincos(model: DeRIS) -> None:
    """Add :func:`sincos_positions` to the patch rows of BEiT-3's vision position table.

    Trained from a fresh init, that table stays tiny beside the patch embeddings (row norm 0.39
    against 20.7 after 30 000 steps of the bundled recipe), so the cognition branch cannot tell
    where things are: the bundled model's referring scores for "the leftmost square" and "the
    rightmost square" differ by 0.016 on average. A fixed table of norm ``sqrt(D / 2)`` (8 for D = 128) makes positions
    visible; the learnt table keeps training on top of it.
    """
    table = model.cognition.beit3.vision_pos.weight
    grid = model.cfg.beit3.grid_size
    # Rows 0 and 1 are unused (fairseq convention), row 2 is the CLS token, the patches follow.
    table[3 : 3 + grid * grid] += sincos_positions(grid, table.shape[1]).to(table)


def param_groups(model: DeRIS, cfg: TrainConfig) -> list[dict]:
    """AdamW groups: lower learning rates for the (pretrained) encoders, no decay on norms/biases."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        mult = 1.0
        if name.startswith("cognition.beit3."):
            mult = cfg.beit3_lr_mult
        elif name.startswith("perception.backbone."):
            mult = cfg.backbone_lr_mult
        decay = 0.0 if p.ndim <= 1 or name.endswith(".bias") else cfg.weight_decay
        groups.setdefault((mult, decay), []).append(p)
    return [{"params": ps, "lr": cfg.lr * m, "weight_decay": d, "lr_mult": m} for (m, d), ps in groups.items()]


def lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, loss_cfg: LossConfig,
               clip_grad: float, world_size: int = 1, autocast: torch.autocast | None = None,
               attribute_head: AttributeHead | None = None, mlm_head: MaskedLanguageHead | None = None,
               step: int = 0) -> dict[str, float]:
    """One optimisation step. Under DDP the loss normalisers (instance count, classification
    weight sum, expression count) are the global ones divided by the world size, so the
    averaged gradients equal those of a single process on the whole batch, also when the
    processes hold different numbers of expressions (grouped batches)."""
    core = model.module if isinstance(model, DistributedDataParallel) else model
    q = core.cfg.num_queries
    counts = [t.shape[0] for t in batch.targets]
    all_counts = [t.shape[0] for t in batch.instances]
    sums = torch.tensor([float(sum(counts)), class_weight_sum(counts, q, loss_cfg.eos_coef),
                         float(sum(all_counts)), class_weight_sum(all_counts, q, loss_cfg.eos_coef), float(batch.size)],
                        dtype=torch.float64, device=batch.image.device)
    if world_size > 1:
        dist.all_reduce(sums)
    norms = [max(float(sums[0]), 1.0) / world_size, float(sums[1]) / world_size,
             max(float(sums[2]), 1.0) / world_size, float(sums[3]) / world_size, float(sums[4]) / world_size]
    # Shared images are encoded once; a batch of one image per expression needs no gathering.
    image_index = batch.image_index if batch.image.shape[0] != batch.size else None
    ctx = autocast if autocast is not None else torch.autocast("cpu", enabled=False)
    with ctx:
        out = model(batch.image, batch.image_mini, batch.token_ids, batch.padding_mask, image_index)
    loss, logs = deris_loss(out, batch.targets, batch.has_target, loss_cfg, num_instances=norms[0], class_norm=norms[1],
                            instances=batch.instances, instance_norms=(norms[2], norms[3]),
                            instance_labels=batch.instance_labels, attribute_head=attribute_head, num_samples=norms[4])
    if mlm_head is not None and loss_cfg.mlm > 0:
        mlm = masked_language_loss(core.cognition.beit3, mlm_head, batch.image_mini, batch.token_ids,
                                   batch.padding_mask, loss_cfg.mlm_rate, step, norms[4], image_index)
        loss = loss + loss_cfg.mlm * mlm
        logs["mlm"] = float(mlm.detach())
        logs["total"] = float(loss.detach())
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss is {float(loss)}; lower the learning rate or check the data")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = list(model.parameters())
    for head in (attribute_head, mlm_head):
        if head is not None:
            reduce_gradients(head, world_size)
            params += list(head.parameters())
    if clip_grad > 0:
        logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, clip_grad))
    optimizer.step()
    return logs


def _dist_setup(device: str) -> tuple[int, int, torch.device]:
    world = int(env.get("WORLD_SIZE"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and device != "cpu" else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(env.get("LOCAL_RANK", str(rank))))
        torch.cuda.set_device(dev)
    return rank, world, dev


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.3g} minutes" if seconds >= 60 else f"{seconds:.3g} s"


def _log(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def build_tokenizer(cfg: TrainConfig, data: ReferDataset, model_cfg: DeRISConfig, out: Path, rank: int) -> BEiT3Tokenizer:
    if cfg.tokenizer:
        return BEiT3Tokenizer(cfg.tokenizer, max_token=model_cfg.max_token)
    path = out / "tokenizer.spm"
    if rank == 0 and not path.exists():
        sentences = sorted({s.sentence for s in data.samples})
        made = train_sentencepiece(sentences, out / "tokenizer", vocab_size=cfg.vocab_size)
        if made != path:
            os.replace(made, path)
    if dist.is_initialized():
        dist.barrier()
    return BEiT3Tokenizer(path, max_token=model_cfg.max_token)


def model_config(cfg: TrainConfig, tokenizer: BEiT3Tokenizer) -> DeRISConfig:
    mc = get_config(cfg.model)
    if cfg.tokenizer is None:  # our own vocabulary
        mc.beit3.vocab_size = tokenizer.vocab_size
    mc.decoder.loopback = cfg.loopback
    mc.name = f"{cfg.model}-trained"
    mc.validate()
    return mc


@dataclass
class StartFrom:
    """Fine-tuning: the model to start from (plain fp32 tensors, e.g. from
    :func:`deris_core.weights.load_trainable`) instead of a fresh one; its config is kept, and the
    tokenizer is ``TrainConfig.tokenizer``."""

    model: DeRIS


def train(cfg: TrainConfig, data: ReferDataset | None = None, start: StartFrom | None = None,
          rotation: Rotation | None = None, on_step: Callable[[int], None] | None = None) -> Path:
    """Train (or resume) and return the path of the final weights.

    ``data``: the training samples already in memory (a store's refs, see ``app.curate.finetune``)
    instead of ``cfg.data``'s folder; ``start``: the model to fine-tune instead of a fresh one.
    ``cfg.max_seconds`` bounds the training time (over resumes): the cosine schedule's length is
    re-planned from the measured speed as the run goes (:class:`.budget.TimeBudget`), so the cosine
    ends at the deadline whether the machine slows down or speeds up, and the run stops when the
    time is up; the resume state keeps the seconds used, the plan and the speed. ``rotation``: images
    of ``data`` that take turns, a fixed number of their groups an epoch (fine-tuning's replay).
    ``on_step(step)``: called after each optimisation step (timed with it: tests slow a run down
    with it). Progress is one bar on standard error; each epoch's figures go to ``log.jsonl``."""
    rank, world, device = _dist_setup(cfg.device)
    if cfg.expressions_per_image < 1 or cfg.batch_size < cfg.expressions_per_image * world:
        raise ValueError(f"--expressions-per-image must be between 1 and batch size / processes "
                         f"({cfg.batch_size} / {world}), got {cfg.expressions_per_image}")
    if cfg.vision_pos_sincos and cfg.init_beit3:
        raise ValueError("--vision-pos-sincos is for a BEiT-3 trained from scratch; the pretrained one given by "
                         "--init-beit3 already has a position table that works, and adding to it would break it")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    if data is None:
        data = load_grefcoco(cfg.data, cfg.split)
    if not data.samples:
        raise ValueError(f"no {cfg.split!r} samples under {cfg.data}")
    if start is not None:
        if not cfg.tokenizer:
            raise ValueError("fine-tuning needs the tokenizer of the weights it starts from (TrainConfig.tokenizer)")
        model = start.model.train()
        mcfg = model.cfg
        tokenizer = BEiT3Tokenizer(cfg.tokenizer, max_token=mcfg.max_token)
    else:
        base_cfg = get_config(cfg.model)
        tokenizer = build_tokenizer(cfg, data, base_cfg, out, rank)
        mcfg = model_config(cfg, tokenizer)
        model = build_deris(mcfg).train()
        init_weights(model)
    if start is None and (cfg.init_beit3 or cfg.init_swin):
        from .pretrained import load_pretrained

        for path, kind in ((cfg.init_beit3, "beit3"), (cfg.init_swin, "swin")):
            if path:
                report = load_pretrained(model, path, kind)
                if rank == 0:
                    print(f"initialised {report}")
    model.to(device)
    pool = [(s.image_id, s.sentence) for s in data.samples]
    nsc = NonReferentConversion(pool, cfg.nsc) if cfg.nsc_enabled else None
    dataset = TrainingSet(data, tokenizer, mcfg, nsc, seed=cfg.seed, expressions_per_image=cfg.expressions_per_image,
                          rotation=rotation)
    sampler = DistributedSampler(dataset, world, rank, shuffle=True, seed=cfg.seed) if world > 1 else None
    gen = torch.Generator().manual_seed(cfg.seed)
    per_rank = max(1, cfg.batch_size // world // cfg.expressions_per_image)  # groups per process and step
    loader = DataLoader(dataset, batch_size=per_rank, sampler=sampler or RandomSampler(dataset, generator=gen),
                        collate_fn=collate, num_workers=cfg.workers, drop_last=True)
    steps_per_epoch = len(loader)
    total = cfg.max_steps or steps_per_epoch * cfg.epochs
    groups = param_groups(model, cfg)
    head = None
    if cfg.loss.attributes > 0:  # training-only appearance supervision (see .attributes)
        head = AttributeHead(mcfg.hidden_dim, dataset.vocab).to(device)
        groups.append({"params": list(head.parameters()), "lr": cfg.lr, "weight_decay": 0.0, "lr_mult": 1.0})
    mlm_head = None
    if cfg.loss.mlm > 0:  # training-only masked language modelling (see .mlm)
        mlm_head = MaskedLanguageHead(mcfg.beit3.embed_dim, mcfg.beit3.vocab_size).to(device)
        groups.append({"params": list(mlm_head.parameters()), "lr": cfg.lr, "weight_decay": 0.0, "lr_mult": 1.0})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999))
    step, start_epoch, sincos_done = 0, 0, False
    used_s, planned, per_step = 0.0, None, None  # earlier sessions' seconds, schedule length and speed (max_seconds)
    state_path = out / "trainer_state.pt"
    if state_path.exists():  # resume
        state = safe_torch_load(state_path)
        load_weights(model, out / "last.safetensors")
        if head is not None and "attribute_head" in state:
            head.load_state_dict(state["attribute_head"])
        if mlm_head is not None and "mlm_head" in state:
            mlm_head.load_state_dict(state["mlm_head"])
        optimizer.load_state_dict(state["optimizer"])
        step, start_epoch = int(state["step"]), int(state["epoch"])
        used_s = float(state.get("seconds", 0.0))
        planned = int(state["planned_total"]) if cfg.max_seconds and state.get("planned_total") else None
        per_step = float(state["per_step"]) if cfg.max_seconds and state.get("per_step") else None
        sincos_done = bool(state.get("vision_pos_sincos", False))
        if rank == 0:
            print(f"resumed from {out} at epoch {start_epoch}, step {step}")
    if cfg.vision_pos_sincos and not sincos_done:
        add_vision_sincos(model)
        sincos_done = True
        if rank == 0:
            print("added a 2-D sine-cosine table to BEiT-3's vision position embeddings")
    net: nn.Module = DistributedDataParallel(model, find_unused_parameters=not cfg.loopback) if world > 1 else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if (cfg.amp and device.type == "cuda") else None
    log_path = out / "log.jsonl"
    if rank == 0:
        (out / "train_config.json").write_text(cfg.to_json())
    from tqdm import tqdm

    cap = total
    budget = TimeBudget(cfg.max_seconds, cap, used_s, planned, per_step) if cfg.max_seconds else None
    if planned is not None:
        total = planned
    budget_start = time.perf_counter()
    if budget is not None:
        budget.start(budget_start)
    out_of_time = bool(budget and budget.over(budget_start))  # a resumed run whose time is spent
    bar = tqdm(total=None if budget and planned is None else total, initial=step, unit="step", dynamic_ncols=True,
               desc="training", disable=rank != 0 or not cfg.progress, file=sys.stderr)

    def agree(value: int) -> int:  # every process must stop at the same step
        if world > 1:
            t = torch.tensor([value], device=device)
            dist.all_reduce(t, op=dist.ReduceOp.MIN)
            value = int(t.item())
        return value

    for epoch in range(start_epoch, cfg.epochs):
        if step >= total or out_of_time:
            break
        dataset.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        else:
            gen.manual_seed(cfg.seed + epoch)
        t0, seen, steps, sums = time.perf_counter(), 0, 0, {}
        for batch in loader:
            # under a time budget the schedule follows the clock: the position is the larger of the step's
            # and the clock's, so a slow-down between two re-plans still ends the cosine at the deadline
            at = budget.position(step, total, time.perf_counter()) if budget else step
            for g in optimizer.param_groups:
                g["lr"] = cfg.lr * g["lr_mult"] * lr_factor(at, total, cfg.warmup_steps)
            logs = train_step(net, optimizer, batch.to(device), cfg.loss, cfg.clip_grad, world, autocast, head,
                              mlm_head, step=step + cfg.seed * 1_000_000)
            step += 1
            steps += 1
            seen += batch.size
            if on_step is not None:
                on_step(step)
            if budget is not None:
                now = time.perf_counter()
                replan = budget.step_done(step, now)
                if replan is not None:
                    first = budget.planned is None
                    budget.set_plan(agree(replan))
                    if budget.planned != total and rank == 0:
                        _log(log_path, {"step": step, "plan_steps": budget.planned, "s_per_step": budget.per_step,
                                        "s_left": max(0.0, cfg.max_seconds - budget.elapsed(now))})
                    total = budget.planned
                    bar.total = total
                    bar.refresh()
                    if first and rank == 0:
                        bar.write(f"{budget.per_step:.2f} s per step: about {total} steps fit in "
                                  f"{_duration(cfg.max_seconds)} (re-planned as the speed changes)", file=sys.stderr)
                over = budget.over(time.perf_counter())
                if world > 1:
                    t = torch.tensor([int(over)], device=device)
                    dist.all_reduce(t, op=dist.ReduceOp.MAX)
                    over = bool(t.item())
                out_of_time = over
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{logs['total']:.3f}", refresh=False)
            if rank == 0 and step % cfg.log_every == 0:
                _log(log_path, {"step": step, "epoch": epoch, "lr": optimizer.param_groups[0]["lr"], **logs})
            if step >= total or out_of_time:
                break
        elapsed = time.perf_counter() - t0
        if world > 1:  # processes may hold unequal shares of expressions when batches are grouped
            total_seen = torch.tensor(float(seen), device=device)
            dist.all_reduce(total_seen)
            seen = int(total_seen.item())
        n = max(1, steps)
        record = {"epoch": epoch + 1, "step": step, "samples": seen, "samples_per_s": seen / elapsed,
                  "epoch_s": elapsed,
                  **{f"mean_{k}": v / n for k, v in sums.items()}}
        if rank == 0:
            save_weights(model, out / "last.safetensors", mcfg)
            tmp = out / "trainer_state.pt.tmp"
            extra = {name: m.state_dict() for name, m in (("attribute_head", head), ("mlm_head", mlm_head)) if m is not None}
            timing = {"seconds": budget.elapsed(time.perf_counter()) if budget else used_s + time.perf_counter() - budget_start}
            if budget is not None and budget.planned:
                timing.update(planned_total=budget.planned, per_step=budget.per_step, budget_seconds=cfg.max_seconds)
            torch.save({"optimizer": optimizer.state_dict(), "step": step, "epoch": epoch + 1,
                        "vision_pos_sincos": sincos_done, **timing, **extra}, tmp)
            os.replace(tmp, state_path)
            if cfg.eval_split:
                from ..evaluation import evaluate_model

                model.eval()
                metrics = evaluate_model(model, tokenizer, cfg.data, cfg.eval_split, device=device, limit=cfg.eval_limit)
                model.train()
                record.update({f"{cfg.eval_split}_{k}": v for k, v in metrics["gres"].items()})
            _log(log_path, record)  # the log file keeps each epoch's figures; the terminal shows the bar
    bar.close()
    if rank == 0:
        final = out / "model.safetensors"
        save_weights(model, final, mcfg)
    if dist.is_initialized():
        dist.barrier()
    return out / "model.safetensors"
