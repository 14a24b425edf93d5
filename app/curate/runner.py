"""Running pre-annotation on one process or sharded over ``torchrun`` processes.

Under ``torchrun`` (``WORLD_SIZE`` > 1) rank 0 decides the pending pairs and broadcasts them;
images are dealt to ranks round-robin. On SQLite, after each chunk every rank sends its results
to rank 0 (``gather_object``), the only process that writes (one file, one writer, perhaps not
reachable from other nodes). On PostgreSQL every rank writes its own results (no gather): the
database is reachable from every node, and a pair already stored — by another rank or by another
run at the same time — is skipped inside the writers' lock, so no pair is ever stored twice. On CUDA each rank
uses its own GPU (``LOCAL_RANK``) and bf16 where the GPU offers it; on CPU the group uses gloo.
Every image is processed the same way whatever the number of ranks, so a sharded run stores the
same refs as a single process.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.distributed as dist
from tqdm import tqdm

from ..settings import Settings, current
from ..store import Store, StoreError
from .preannotate import (Pair, PairResult, SentenceCheck, answered_by_people, group_by_image, pending, predict_image,
                          sentence_checker, write_results)

log = logging.getLogger(__name__)


@dataclass
class Summary:
    pairs: int
    already_done: int
    written: int
    no_target: int
    seconds: float
    skipped: list[str] = field(default_factory=list)  # images whose pixels could not be read
    skipped_sentences: list[str] = field(default_factory=list)  # sentences the model cannot take
    answered_by_people: int = 0  # pairs skipped: their image has a person's ref with the same sentence

    def as_dict(self) -> dict:
        rate = self.written / self.seconds if self.seconds else 0.0
        return {"pairs": self.pairs, "already_done": self.already_done, "written": self.written,
                "no_target_share": round(self.no_target / self.written, 4) if self.written else 0.0,
                "seconds": round(self.seconds, 2), "pairs_per_s": round(rate, 3), "skipped_images": self.skipped,
                "skipped_sentences": self.skipped_sentences,
                "skipped_answered_by_people": self.answered_by_people}


def distributed_env(settings: Settings | None = None) -> tuple[int, int, int]:
    """``(rank, world size, local rank)`` from torchrun's environment (0, 1, 0 without it), as the entry
    point read it (``settings``; default: the installed ones)."""
    s = settings or current()
    return s.rank, s.world_size, s.local_rank


def init_distributed(device: str, settings: Settings | None = None) -> tuple[int, int, str]:
    """Join the torchrun group; returns ``(rank, world, device for this rank)``."""
    rank, world, local = distributed_env(settings)
    if world > 1 and not dist.is_initialized():
        use_cuda = device != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if device != "cpu" and torch.cuda.is_available():
        return rank, world, f"cuda:{local}" if world > 1 else "cuda"
    return rank, world, "cpu"


def close_distributed() -> None:
    """Leave the torchrun group before the interpreter exits: a gloo group torn down by the exit
    itself can abort the process ("terminate called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _collective_device() -> torch.device:
    """Where collective tensors must live: the rank's GPU under NCCL, the CPU under gloo."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _any(flag: bool, world: int) -> bool:
    """True on every rank when ``flag`` is true on any rank (so all ranks stop together)."""
    if world == 1:
        return flag
    t = torch.tensor([int(flag)], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def run(store: Store, predictor, pairs: Sequence[Pair], key: str, *, batch: int = 8, chunk: int = 8,
        progress: bool = True, load: Callable[[int], object] | None = None,
        on_chunk: Callable[[int], None] | None = None, check: SentenceCheck | None = None,
        direct: bool | None = None) -> Summary:
    """Pre-annotate ``pairs`` (all ranks call this with the same arguments; rank 0 writes, or with
    ``direct`` — the default on PostgreSQL — every rank writes its own results).

    An image whose pixels cannot be read is skipped and listed (its pairs stay pending for a
    later run), and so is a sentence the model cannot take (``check``, default: the predictor's
    tokenizer); any other failure on one rank stops every rank at the end of the chunk, after
    rank 0 has committed what the others sent, instead of leaving them waiting.
    """
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    t0 = time.perf_counter()
    todo = pending(store, pairs, key) if rank == 0 else None
    refused: list[str] = []
    by_people = 0
    if rank == 0:  # pairs people answered are theirs: counted apart from the model's own earlier runs
        todo, by_people = answered_by_people(store, todo)
    if rank == 0:  # a sentence the model cannot take is listed, never allowed to stop the run
        check = check or sentence_checker(predictor)
        why = {s: check(s) for s in {p.sentence for p in todo}}
        refused = [f"sentence {s[:80]!r}: {w}" for s, w in sorted(why.items()) if w]
        todo = [p for p in todo if not why[p.sentence]]
    if world > 1:
        box = [todo]
        dist.broadcast_object_list(box, src=0)
        todo = box[0]
    groups = group_by_image(todo)
    mine = groups[rank::world]
    n_chunks = -(-len(mine) // chunk)
    if world > 1:
        t = torch.tensor([n_chunks], device=_collective_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        n_chunks = int(t.item())
    load = load or store.load_image
    direct = store.location.is_postgres if direct is None else direct
    written = no_target = 0
    skipped: list[str] = []
    bar = tqdm(total=len(todo), unit="pair", desc="pre-annotating", disable=not progress or rank != 0)
    for c in range(n_chunks):
        results: list[PairResult] = []
        failure: BaseException | None = None
        try:
            for image_id, sentences in mine[c * chunk:(c + 1) * chunk]:
                rgb = load(image_id)
                if rgb is None:
                    skipped.append(f"image {image_id}: pixels not available")
                    continue
                results += predict_image(predictor, rgb, image_id, sentences, batch)
        except Exception as exc:  # noqa: BLE001 - re-raised as is (traceback kept) once the other ranks were told
            failure = exc
        if direct:  # every rank writes its own results; the counts are summed for rank 0's report
            try:  # what was computed before a failure is kept, as rank 0 keeps what the others sent
                new = write_results(store, results, key)
            except Exception as exc:  # noqa: BLE001 - re-raised as is (traceback kept) once the other ranks were told
                failure, new = failure or exc, 0
            counts = [len(results), new, sum(1 for r in results if not r.referred)]
            if world > 1:
                t = torch.tensor(counts, device=_collective_device())
                dist.all_reduce(t)
                counts = [int(v) for v in t.tolist()]
            written += counts[1]
            no_target += counts[2]
            if rank == 0:
                bar.update(counts[0])
                bar.set_postfix(pairs_per_s=f"{bar.n / max(1e-9, time.perf_counter() - t0):.2f}")
                if on_chunk is not None:
                    on_chunk(c)
        elif world > 1:
            gathered: list | None = [None] * world if rank == 0 else None
            dist.gather_object((results, skipped), gathered, dst=0)
            if rank == 0:
                results = [r for part, _ in gathered for r in part]
                skipped = sorted({s for _, part in gathered for s in part})
        if rank == 0 and not direct:
            written += write_results(store, results, key)
            no_target += sum(1 for r in results if not r.referred)
            bar.update(len(results))
            bar.set_postfix(pairs_per_s=f"{bar.n / max(1e-9, time.perf_counter() - t0):.2f}")
            if on_chunk is not None:
                on_chunk(c)
        if _any(failure is not None, world):
            bar.close()
            if failure is not None:
                raise failure
            raise StoreError("another rank failed; what was computed so far is committed, rerun to finish")
    bar.close()
    if world > 1:
        if direct:  # the images each rank could not read, for rank 0's report
            parts: list = [None] * world
            dist.all_gather_object(parts, skipped)
            skipped = sorted({s for part in parts for s in part})
        dist.barrier()
    summary = Summary(len(pairs), len(pairs) - len(todo) - by_people, written, no_target,
                      time.perf_counter() - t0)
    summary.skipped, summary.skipped_sentences, summary.answered_by_people = skipped, refused, by_people
    if rank == 0:
        log.info("pre-annotation with %s: %d pairs, %d already done, %d answered by people, %d written (%d no-target), "
                 "%d images and %d sentences skipped, %.1f s", key, summary.pairs, summary.already_done, by_people,
                 summary.written, summary.no_target, len(skipped), len(refused), summary.seconds)
    return summary
