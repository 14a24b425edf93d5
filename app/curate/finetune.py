"""Fine-tuning from the store: the team's refs of a status become the next model, measured.

``finetune`` turns the chosen refs into a training set in memory (each image decoded once, no
export round trip), holds out whole images (``--holdout-split val``: every image that has a
``val`` ref; or a seeded fraction of the images), evaluates the starting weights on the held-out
refs with the GRES metrics, trains with :func:`deris_core.train.train` from those weights with
:data:`RECIPE`, and evaluates the result on the same refs. The run folder holds what
``load_predictor``/``--weights`` load (``model.safetensors``, ``config.json``, ``tokenizer.spm``),
the model card (``README.md``: the data snapshot and the metrics), ``finetune.json`` (the plan: ref
ids, the snapshot, the metrics) and the trainer's ``log.jsonl`` and resume state: the same command
again resumes a killed run, and refuses when the store's selection or the starting weights changed.

``promote`` records a run in the store's ``models`` table, only when the held-out gIoU improved and
N-acc fell by at most one point. One fine-tune runs per store at a time (the ``locks`` table).
"""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from deris_core.data.refer import DataError, ReferDataset, ReferSample, load_grefcoco, merge
from deris_core.data.training import Rotation

from ..store import ModelRecord, RefFilter, RefRecord, RefStatus, Store, StoreError, model_name_problem
from ..store.models import pin_problem
from ..store.queue import ref_ids
from .preannotate import weights_digest

log = logging.getLogger(__name__)

LOCK = "finetune"
PLAN_FILE = "finetune.json"
MIN_HOLDOUT_SAMPLES = 1
MIN_HOLDOUT_TARGETED = 1  # held-out sentences with a target: without one, gIoU measures only "no target" answers


@dataclass
class Recipe:
    """The fine-tuning settings (the training recipe's, for a model that is already trained): a tenth
    of the bundled model's peak learning rate, a short warm-up, the official lower rates for the
    encoders, NSC as in training, no training-only heads (they would start from random weights)."""

    lr: float = 5e-5
    warmup_steps: int = 20
    batch_size: int = 16
    expressions_per_image: int = 4
    beit3_lr_mult: float = 0.5
    backbone_lr_mult: float = 0.1
    weight_decay: float = 0.05
    nsc_min_words: int = 4


RECIPE = Recipe()


@dataclass
class Options:
    db: str
    weights: str  # what to start from: anything load_predictor takes, or a registered model's name
    out: str
    statuses: tuple[str, ...] = (RefStatus.REVIEWED.value,)
    holdout_split: str | None = None  # hold out every image that has a ref of this split ...
    holdout_fraction: float = 0.1  # ... else this share of the images (seeded)
    seed: int = 0
    minutes: float | None = None
    steps: int | None = None
    recipe: Recipe = dataclasses.field(default_factory=Recipe)
    # replay: refs of the distribution the parent learnt (a gRefCOCO-format folder, e.g. its training
    # set), mixed in so that learning the team's refs does not forget the rest; ``replay_share`` of each
    # epoch's sentences come from it, its images taking turns (a seeded cycle through all of them)
    replay: str | None = None
    replay_split: str = "train"
    replay_share: float = 0.85  # the measured loop's choice (docs/learning-loop.md): testA kept within 2 points
    device: str = "auto"
    threads: int | None = None
    progress: bool = True
    break_lock: bool = False  # take the store's fine-tune lock from a holder that is gone (another machine)


class FinetuneError(StoreError):
    """A fine-tune that cannot run as asked (one clear line; nothing was written to the store)."""


# --- which refs: selection, held-out images, snapshot ---------------------------------------------


def select_refs(store: Store, statuses: Sequence[str]) -> list[RefRecord]:
    """The refs of the given statuses, by id."""
    return store.refs(ref_ids=ref_ids(store, RefFilter.of(tuple(statuses))))


def hold_out(refs: Sequence[RefRecord], split: str | None, fraction: float, seed: int) -> tuple[list[RefRecord], list[RefRecord]]:
    """``(train, held out)``, whole images on one side: with ``split``, every image that has a ref of
    that split is held out (with all its refs); else ``fraction`` of the images, drawn with ``seed``."""
    images = sorted({r.image_id for r in refs})
    if split:
        held = {r.image_id for r in refs if r.split == split}
    else:
        n = min(len(images), max(1, round(fraction * len(images)))) if images else 0
        held = set(np.random.default_rng(seed).permutation(images)[:n].tolist())
    return [r for r in refs if r.image_id not in held], [r for r in refs if r.image_id in held]


def ids_hash(refs: Sequence[RefRecord]) -> str:
    """SHA-256 of the refs' ids and versions (the data a model saw, as the store knew it)."""
    text = "".join(f"{r.id}:{r.version}\n" for r in sorted(refs, key=lambda r: r.id))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def snapshot(store: Store, statuses: Sequence[str], train: Sequence[RefRecord], held: Sequence[RefRecord],
             rule: str) -> dict:
    """What a model was trained on: counts (refs, sentences, images; by status and split), the
    held-out rule and the hash of the refs' ids and versions."""
    every = [*train, *held]
    return {
        "database": store.path.name, "statuses": list(statuses), "refs": len(every),
        "by_status": dict(sorted(Counter(r.status for r in every).items())),
        "train": {"refs": len(train), "sentences": sum(len(r.sentences) for r in train),
                  "images": len({r.image_id for r in train}), "no_target_refs": sum(r.no_target for r in train),
                  "by_split": dict(sorted(Counter(r.split for r in train).items()))},
        "held_out": {"refs": len(held), "sentences": sum(len(r.sentences) for r in held),
                     "images": len({r.image_id for r in held}), "no_target_refs": sum(r.no_target for r in held),
                     "by_split": dict(sorted(Counter(r.split for r in held).items())), "rule": rule},
        "hash": ids_hash(every), "train_hash": ids_hash(train), "held_out_hash": ids_hash(held),
    }


def minimum_train_sentences(recipe: Recipe, world: int = 1) -> int:
    """The fewest training sentences that make one optimisation step (one batch)."""
    return max(recipe.batch_size, world)


# --- the data in memory ---------------------------------------------------------------------------


def load_pixels(store: Store, image_ids: Sequence[int]) -> dict[int, np.ndarray]:
    """Every image's pixels, read once; images that are gone are all listed in one error."""
    pixels, gone = {}, []
    for iid in sorted(set(image_ids)):
        rgb = store.load_image(iid)
        if rgb is None:
            gone.append(iid)
        else:
            pixels[iid] = rgb
    if gone:
        names = ", ".join(f"{store.image(i).file_name} (image {i})" for i in gone[:5]) + (" ..." if len(gone) > 5 else "")
        raise FinetuneError(f"{len(gone)} image{'s' if len(gone) > 1 else ''} of the chosen refs cannot be read (file "
                            f"gone, unreadable or changed): {names}; restore the files, or delete or re-status those "
                            "refs, then run again")
    return pixels


def to_dataset(store: Store, refs: Sequence[RefRecord], pixels: dict[int, np.ndarray]) -> ReferDataset:
    """The refs as a :class:`ReferDataset` in memory: one sample per sentence; per image every
    instance (its exact RLE) except unverified model-made ones that no chosen ref targets."""
    targeted = {i for r in refs for i in r.instance_ids}
    images, anns, samples = {}, {}, []
    for r in refs:
        if r.image_id not in images:
            rec = store.image(r.image_id)
            images[r.image_id] = {"id": rec.id, "file_name": rec.file_name, "height": rec.height, "width": rec.width}
            for inst in store.instances(r.image_id):
                if inst.source != "model" or inst.id in targeted:
                    anns[inst.id] = {"id": inst.id, "image_id": inst.image_id, "category_id": inst.category_id,
                                     "iscrowd": int(inst.iscrowd), "segmentation": inst.rle}
        targets = () if r.no_target else tuple(r.instance_ids)
        for sid, text in zip(r.sentence_ids, r.sentences):
            samples.append(ReferSample(r.id, sid, r.image_id, text, targets, r.split))
    cats = store.categories()
    return ReferDataset(samples, images, anns, store.media_dir, cats,
                        pixels={i: pixels[i] for i in images})


# --- metrics and promotion ------------------------------------------------------------------------


def evaluate(model, tokenizer, data: ReferDataset, device: str = "cpu", progress: bool = False, desc: str = "") -> dict:
    """Held-out GRES (and RIS) metrics of an in-memory model; the model is left trainable again."""
    from deris_core.evaluation import evaluate_dataset
    from deris_core.model.layers import unpack_linear_weights
    from deris_core.predictor import Predictor

    was = model.training
    try:
        res = evaluate_dataset(Predictor(model, tokenizer, device=device), data, progress=progress, desc=desc,
                               defined=True)
    finally:
        unpack_linear_weights(model)
        model.train(was)
    out = {"samples": res["samples"], "images": res["images"], **res["gres"]}
    if res.get("gres_undefined"):  # e.g. cIoU when no pixel is targeted nor predicted: said, not a crash
        out["undefined"] = res["gres_undefined"]
    return out


def promotion_problem(before: dict, after: dict, max_nacc_drop: float = 1.0, no_target_refs: int | None = None) -> str | None:
    """Why a fine-tuned model is not promoted (None: it is): held-out gIoU must rise and N-acc
    fall by at most ``max_nacc_drop`` points. With ``no_target_refs`` (the held-out no-target refs
    N-acc is counted over) the reason says how much one of them weighs, so a fall of one ref on a
    small held-out set reads as what it is."""
    for key in ("gIoU", "N_acc"):
        if not isinstance(before.get(key), (int, float)) or not isinstance(after.get(key), (int, float)):
            why = (after.get("undefined") or before.get("undefined") or {}).get(key)
            return f"the held-out {key} is not defined before and after" + (f" ({why})" if why else f" (see {PLAN_FILE})")
    if after["gIoU"] <= before["gIoU"]:
        return f"held-out gIoU did not improve ({before['gIoU']:.2f} -> {after['gIoU']:.2f})"
    if after["N_acc"] < before["N_acc"] - max_nacc_drop:
        weight = (f"; one of the {no_target_refs} held-out no-target refs weighs {100 / no_target_refs:.2f} points: hold "
                  f"out more images to judge it finer" if no_target_refs else "")
        return (f"held-out N-acc fell by {before['N_acc'] - after['N_acc']:.2f} points ({before['N_acc']:.2f} -> "
                f"{after['N_acc']:.2f}; at most {max_nacc_drop:g} allowed{weight})")
    return None


def held_out_caveat(plan: dict) -> str | None:
    """What the held-out figures cannot see: without replay they measure the store's own refs only, so
    what the parent knew beyond them may be forgotten unseen (docs/learning-loop.md, the measured loop)."""
    if plan.get("replay"):
        return None
    return ("no replay: the held-out refs measure the store's own refs only; what the parent knew beyond them may "
            "be forgotten without these figures showing it (replay earlier refs or the parent's data: "
            "docs/learning-loop.md)")


def _no_target_refs(plan: dict) -> int | None:
    return (plan.get("snapshot") or {}).get("held_out", {}).get("no_target_refs") or None


RESERVED_NAMES = ("bundled",)


def promote(store: Store, run: str | Path, name: str | None = None, user: str = "") -> ModelRecord:
    """Register the finished run ``run`` as model ``name`` (default: the run folder's name), only when
    its held-out metrics allow it (:func:`promotion_problem`); a FinetuneError says why not."""
    from deris_core.config import OFFICIAL_NAMES

    run = Path(run)
    plan = read_plan(run)
    if plan is None or not plan.get("metrics_after") or not (run / "model.safetensors").is_file():
        raise FinetuneError(f"{run.name} is not a finished fine-tune run (no {PLAN_FILE} with metrics after "
                            "training, or no model.safetensors); run python -m app.curate finetune first")
    if plan["snapshot"].get("database") != store.path.name:
        raise FinetuneError(f"{run.name} was fine-tuned from the refs of {plan['snapshot'].get('database')}, not of "
                            f"{store.path.name}")
    name = name or run.resolve().name
    why = model_name_problem(name)
    if why is None and (name.lower() in RESERVED_NAMES or name.lower() in OFFICIAL_NAMES):
        why = f"{name!r} is the name of a published or bundled model"
    if why:
        raise FinetuneError(f"cannot promote as {name!r}: {why}")
    problem = promotion_problem(plan["metrics_before"], plan["metrics_after"], no_target_refs=_no_target_refs(plan))
    if problem:
        raise FinetuneError(f"not promoted: {problem}")
    weights = (run / "model.safetensors").resolve()
    digest = weights_digest(weights)
    measured = plan.get("weights_sha256")  # the weights whose held-out metrics the plan holds
    if measured and measured != digest:
        raise FinetuneError(f"not promoted: {run.name}/model.safetensors changed since its held-out metrics were "
                            f"measured (sha256:{measured[:12]} then, sha256:{digest[:12]} now); fine-tune again so that "
                            "the metrics are of these weights")
    # the registry pins the weights it checked: loading the name later refuses a file that changed
    rec = ModelRecord(0, name, str(weights), plan["config"], plan["parent"], {**plan["snapshot"], "weights_sha256": digest},
                      plan["metrics_before"], plan["metrics_after"], user or _user())
    digest_of = {}

    def in_use(existing: str) -> int:
        old = store.model(existing)
        digest = ""
        if old is not None and Path(old.weights).is_file():
            digest = digest_of.setdefault(old.weights, weights_digest(old.weights))
        return store.model_uses(existing, digest)

    return store.register_model(rec, in_use=in_use)


def model_in_use(store: Store, rec: ModelRecord) -> int:
    """How many predictions and qa rows the registered model ``rec`` made."""
    digest = weights_digest(rec.weights) if Path(rec.weights).is_file() else ""
    return store.model_uses(rec.name, digest)


def registered_weights(store: Store, weights: str) -> str:
    """A registered model's weights file for its name; any other ``weights`` unchanged."""
    rec = store.model(weights) if model_name_problem(weights) is None else None
    if rec is None:
        return weights
    if not Path(rec.weights).is_file():
        raise FinetuneError(f"registered model {rec.name!r}: its weights file is gone ({Path(rec.weights).name} in "
                            f"{Path(rec.weights).parent.name}/)")
    problem = pin_problem(rec, weights_digest(rec.weights))
    if problem:
        raise FinetuneError(problem)
    return rec.weights


def registry_check(rec: ModelRecord) -> dict:
    """What ``models`` shows of a registered model's weights: the pinned hash, and whether the file
    still holds those bytes (``weights_ok`` None: nothing pinned, or the file is gone)."""
    if not Path(rec.weights).is_file():
        return {"weights_sha256": rec.weights_sha256, "weights_ok": None, "problem": "the weights file is gone"}
    problem = pin_problem(rec, weights_digest(rec.weights))
    return {"weights_sha256": rec.weights_sha256, "weights_ok": None if not rec.weights_sha256 else problem is None,
            **({"problem": problem} if problem else {})}


# --- the run folder -------------------------------------------------------------------------------


def read_plan(run: Path) -> dict | None:
    path = Path(run) / PLAN_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FinetuneError(f"{path.name} in {Path(run).name} is unreadable ({exc}); use a new --out") from None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):  # no user name in this environment (no pwd entry, no $USER)
        return ""


def process_start(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, from /proc; "" where unknown): with the pid
    it names one process, so a pid that a later process reuses is not taken for the lock's holder."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    return fields[19] if len(fields) > 19 else ""


def _holder(out: Path) -> str:
    pid = os.getpid()
    start = process_start(pid)
    return f"{socket.gethostname()}:{pid}{'/' + start if start else ''}:{_user()}:{out.resolve().name}"


def holder_alive(holder: str) -> bool | None:
    """Whether the lock's holder is a running process of this machine: True (same host, its pid runs
    and, when recorded, started when the holder did), False (same host, gone), None (another machine,
    or a holder this version cannot read: not checkable from here)."""
    host, _, rest = holder.partition(":")
    pid, _, start = rest.split(":", 1)[0].partition("/")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it runs
    if start and process_start(int(pid)) not in ("", start):
        return False  # the pid now names a later process
    return True


def _stale(holder: str, at: float) -> bool:
    """A lock taken by a process of this machine that no longer runs (killed). One of another machine
    cannot be checked from here: ``--break-lock`` takes it."""
    return holder_alive(holder) is False


def _breakable(holder: str, at: float) -> bool:
    """``--break-lock``: any holder except one provably alive on this machine."""
    return holder_alive(holder) is not True


def replay_rotation(data: ReferDataset, replay_images: frozenset[int], per_image: int, share: float) -> Rotation | None:
    """The replayed images take turns: each epoch ``share`` of its groups of sentences come from them
    (``share / (1 - share)`` as many as the store's), the next ones of a cycle through all of them."""
    if not replay_images:
        return None
    per: dict[int, int] = {}
    for smp in data.samples:
        if smp.image_id not in replay_images:
            per[smp.image_id] = per.get(smp.image_id, 0) + 1
    own_groups = sum(math.ceil(n / per_image) for n in per.values())
    return Rotation(replay_images, max(1, math.ceil(own_groups * share / (1 - share))))


def _replay_text(replay: dict | None) -> str:
    if not replay:
        return "no replay"
    return (f"{replay['share']:.0%} of each epoch's sentences, in turns from {replay['sentences']} sentences on "
            f"{replay['images']} images of {Path(replay['data']).name}/ (split {replay['split']})")


def model_card(plan: dict) -> str:
    """The run's README.md: where it came from, the data snapshot and the held-out metrics."""
    snap, before, after = plan["snapshot"], plan["metrics_before"], plan.get("metrics_after") or {}
    keys = [k for k in ("gIoU", "cIoU", "N_acc", "T_acc", "Pr@0.7", "Pr@0.9") if k in before]
    lines = ["---", "library_name: deris-studio", "pipeline_tag: image-segmentation", "tags:",
             "- referring-image-segmentation", "- deris", "---", "", f"# {plan['name']}", "",
             f"Fine-tuned by DeRIS Studio from `{plan['parent']}` (config `{plan['config']}`) on the "
             f"{'/'.join(snap['statuses'])} refs of `{snap['database']}`.", "",
             "```python", "from deris_core.weights import load_predictor", "",
             f'predictor = load_predictor("{plan["name"]}")   # this folder', "```", "",
             "## Data snapshot", "",
             f"- refs: {snap['refs']} ({', '.join(f'{k} {v}' for k, v in snap['by_status'].items())}), "
             f"hash of ids and versions `{snap['hash']}`",
             f"- trained on: {snap['train']['refs']} refs, {snap['train']['sentences']} sentences, "
             f"{snap['train']['images']} images ({snap['train']['no_target_refs']} no-target refs)",
             f"- held out ({snap['held_out']['rule']}): {snap['held_out']['refs']} refs, "
             f"{snap['held_out']['sentences']} sentences, {snap['held_out']['images']} images; never trained on",
             f"- replayed: {_replay_text(plan.get('replay'))}", "",
             "## Training", "", f"- {plan['training']}", *([f"- time: {plan['time']}"] if plan.get("time") else []),
             "", "## Held-out metrics (GRES)", "",
             "| metric | before | after |", "|---|---|---|"]
    lines += [f"| {k} | {_figure(before[k])} | {_figure(after[k]) if k in after else ''} |" for k in keys]
    caveat = held_out_caveat(plan)
    if caveat:
        lines += ["", f"Caveat: {caveat[0].upper()}{caveat[1:]}."]
    undefined = {**before.get("undefined", {}), **after.get("undefined", {})}
    if undefined:
        lines += ["", "Not defined on these refs: " + "; ".join(f"{k}: {why}" for k, why in undefined.items()) + "."]
    return "\n".join(lines) + "\n"


def _figure(value) -> str:
    return "not defined" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


# --- the job --------------------------------------------------------------------------------------


def _time_text(out: Path, o: Options) -> str:
    """The planned and the used training time (over resumes), from the trainer's resume state."""
    from deris_core.checkpoint import safe_torch_load

    try:
        state = safe_torch_load(out / "trainer_state.pt")
    except (OSError, RuntimeError, ValueError):
        return ""
    used, steps = float(state.get("seconds", 0.0)), int(state.get("step", 0))
    planned = f"planned {o.minutes * 60:.0f} s" if o.minutes else f"planned {o.steps} steps"
    return f"{planned}, used {used:.0f} s for {steps} steps"


def _check_options(o: Options) -> None:
    if o.minutes is not None and o.steps is not None:
        raise FinetuneError("give --minutes or --steps, not both")
    if o.minutes is not None and not (math.isfinite(o.minutes) and o.minutes > 0):
        raise FinetuneError(f"--minutes must be a positive number, got {o.minutes}")
    if o.steps is not None and o.steps < 1:
        raise FinetuneError(f"--steps must be at least 1, got {o.steps}")
    if not o.holdout_split and not (math.isfinite(o.holdout_fraction) and 0 < o.holdout_fraction < 1):
        raise FinetuneError(f"--holdout-fraction must be between 0 and 1 (exclusive), got {o.holdout_fraction}")
    if o.replay and not (math.isfinite(o.replay_share) and 0 < o.replay_share < 1):
        raise FinetuneError(f"--replay-share must be between 0 and 1 (exclusive), got {o.replay_share}")


def replay_refs(o: Options) -> tuple[ReferDataset | None, dict | None]:
    """The replay pool: every ref of ``o.replay``'s ``o.replay_split`` (their files read where they
    are, when a turn comes), and what the plan records of it. Training takes ``replay_share`` of each
    epoch's sentences from it in turns (:func:`replay_rotation`), so the whole distribution comes
    back, not the same few images over and over."""
    if not o.replay:
        return None, None
    root = Path(o.replay)
    if not (root / "grefcoco" / "grefs(unc).json").is_file():
        raise FinetuneError(f"--replay {o.replay}: not a gRefCOCO-format folder (it needs grefcoco/grefs(unc).json, "
                            "grefcoco/instances.json and images/train2014/), e.g. the parent's training set")
    try:
        data = load_grefcoco(root, o.replay_split)
    except DataError as exc:
        raise FinetuneError(f"--replay {o.replay}: {exc}") from None
    if not data.samples:
        raise FinetuneError(f"--replay {o.replay} has no refs of split {o.replay_split!r}")
    images = {smp.image_id for smp in data.samples}
    missing = [data.images[i]["file_name"] for i in sorted(images) if not data.image_path(i).is_file()]
    if missing:
        raise FinetuneError(f"--replay {o.replay}: {len(missing)} image file(s) are missing, e.g. "
                            f"images/train2014/{missing[0]}")
    # the split's images and their instances only (instances.json holds every split's)
    pool = ReferDataset(data.samples, {i: data.images[i] for i in images},
                        {a: ann for a, ann in data.annotations.items() if int(ann["image_id"]) in images},
                        data.image_dir, data.categories)
    digest = hashlib.sha256("".join(f"{x.ref_id}:{x.sent_id}\n" for x in data.samples).encode()).hexdigest()
    return pool, {"data": str(root.resolve()), "split": o.replay_split, "share": o.replay_share,
                  "sentences": len(data.samples), "images": len(images), "hash": "sha256:" + digest}


def holdout_problem(held: Sequence[RefRecord]) -> str | None:
    """Why the held-out refs cannot decide a promotion (None: they can), in words that say what to
    change. gIoU and N-acc decide it; they are defined for no-target refs too, but a held-out set
    without a single target would judge a model only on saying "nothing here" (and its cIoU, T-acc and
    Pr@t are undefined), so training on it would be time spent on a run nobody can judge."""
    targeted = sum(len(r.sentences) for r in held if not r.no_target)
    if targeted < MIN_HOLDOUT_TARGETED:
        n = sum(len(r.sentences) for r in held)
        images = len({r.image_id for r in held})
        return (f"the held-out images have no targets ({n} held-out sentence{'s' if n != 1 else ''} on {images} "
                f"image{'s' if images != 1 else ''}, all no-target), so the run could not be judged: hold out more, "
                "or more varied, images (a larger --holdout-fraction, another --seed, or a --holdout-split whose refs "
                "have targets)")
    return None


def plan_data(store: Store, o: Options, world: int = 1) -> tuple[list[RefRecord], list[RefRecord], dict]:
    """``(train refs, held-out refs, snapshot)`` or a FinetuneError that says what is missing."""
    refs = select_refs(store, o.statuses)
    status = "/".join(o.statuses)
    need = minimum_train_sentences(o.recipe, world)
    if not refs:
        raise FinetuneError(f"the store has no {status} refs; fine-tuning needs at least {need} training sentences "
                            f"plus held-out ones (--status picks other statuses)")
    train, held = hold_out(refs, o.holdout_split, o.holdout_fraction, o.seed)
    rule = f"split {o.holdout_split}" if o.holdout_split else f"fraction {o.holdout_fraction:g} of the images, seed {o.seed}"
    if sum(len(r.sentences) for r in held) < MIN_HOLDOUT_SAMPLES:
        hint = (f"none of the {len(refs)} {status} refs has split {o.holdout_split!r}; give some refs that split or "
                "use --holdout-fraction 0.1") if o.holdout_split else "review refs on more images"
        raise FinetuneError(f"the held-out set would be empty: {hint}")
    problem = holdout_problem(held)
    if problem:
        raise FinetuneError(problem)
    n_train = sum(len(r.sentences) for r in train)
    if n_train < need:
        raise FinetuneError(
            f"too few refs to fine-tune: {len(refs)} {status} refs, {n_train} training sentences after holding out "
            f"{len({r.image_id for r in held})} images ({rule}); at least {need} are needed (one batch of "
            f"--batch-size {o.recipe.batch_size})")
    return train, held, snapshot(store, o.statuses, train, held, rule)


def finetune(store: Store, o: Options) -> dict:
    """Run (or resume) a fine-tune; returns the summary (also in the run's ``finetune.json``)."""
    import torch.distributed as dist

    from .runner import init_distributed

    _check_options(o)
    out = Path(o.out)
    rank, world, device = init_distributed(o.device)
    holder = _holder(out)
    failure, locked = None, False
    try:
        result = None
        if rank == 0:  # whatever goes wrong here reaches the other ranks, who would wait forever otherwise
            try:
                busy = store.take_lock(LOCK, holder, _breakable if o.break_lock else _stale)
                locked = busy is None
                if busy and o.break_lock:
                    failure = (f"--break-lock refused: the fine-tune holding {store.location.shown}'s lock is running on "
                               f"this machine ({busy}); wait for it to finish, or stop that process first")
                elif busy:
                    failure = (f"another fine-tune is running on {store.location.shown} ({busy}); wait for it to "
                               "finish, or, if that process is gone (killed on another machine), give --break-lock")
                else:
                    result = _prepare(store, o, out, world)
            except (StoreError, OSError, ValueError) as exc:
                failure = str(exc)
            except Exception as exc:  # noqa: BLE001 - a bug: the traceback in the log, one line said on every rank
                log.exception("preparing the fine-tune failed")
                failure = f"{type(exc).__name__}: {exc}"
        if world > 1:
            box = [(failure, result)]
            dist.broadcast_object_list(box, src=0)
            failure, result = box[0]
        if failure:
            raise FinetuneError(failure)
        return _train_and_measure(store, o, out, result, rank, world, device)
    finally:
        if locked:
            store.release_lock(LOCK, holder)


def _prepare(store: Store, o: Options, out: Path, world: int) -> dict:
    """Rank 0: the plan, the data in memory, the starting weights checked against a run to resume,
    and the held-out metrics before training."""
    from deris_core.checkpoint import config_from_safetensors
    from deris_core.weights import load_trainable

    weights = registered_weights(store, o.weights)
    train, held, snap = plan_data(store, o, world)
    plan = read_plan(out)
    if plan is not None and plan["snapshot"]["hash"] != snap["hash"]:
        raise FinetuneError(f"{out.name} was started on other refs (the store's {'/'.join(o.statuses)} refs changed since: "
                            f"{plan['snapshot']['refs']} then, {snap['refs']} now, or edited); use a new --out")
    if plan is not None and (plan["held_out_refs"] != [r.id for r in held] or plan["train_refs"] != [r.id for r in train]):
        # the weights so far have seen images that would now be held out: their "after" would flatter
        raise FinetuneError(f"{out.name} was started with other held-out images ({len(plan['held_out_refs'])} held-out "
                            f"refs then, {len(held)} now: another --seed, --holdout-fraction or --holdout-split); give "
                            "the same, or a new --out")
    model, tok_path, res = load_trainable(weights)
    parent_digest = weights_digest(res.weights)
    parent = f"{o.weights} (sha256:{parent_digest[:16]})"
    last = out / "last.safetensors"
    if last.is_file():
        run_cfg = config_from_safetensors(last)
        if run_cfg is not None and run_cfg.to_json() != model.cfg.to_json():
            raise FinetuneError(f"--from {o.weights} has config {model.cfg.name!r}, but {out.name} was being fine-tuned "
                                f"from weights of config {run_cfg.name!r}; give the weights it started from, or a new --out")
    if plan is not None and plan["parent"] != parent:
        raise FinetuneError(f"{out.name} was started from {plan['parent']}, not from {parent}; give the same --from, "
                            "or a new --out")
    pixels = load_pixels(store, [r.image_id for r in [*train, *held]])
    train_ds, held_ds = to_dataset(store, train, pixels), to_dataset(store, held, pixels)
    replayed, replay = replay_refs(o)
    if plan is not None and plan.get("replay") != replay:
        raise FinetuneError(f"{out.name} was started with other replayed refs ({_replay_text(plan.get('replay'))} then, "
                            f"{_replay_text(replay)} now); give the same --replay and --replay-share, or a new --out")
    store_images = frozenset(train_ds.images)
    if replayed is not None:
        train_ds = merge(train_ds, replayed)
    out.mkdir(parents=True, exist_ok=True)
    tok = out / "tokenizer.spm"
    if not tok.is_file():
        shutil.copyfile(tok_path, out / ".tokenizer.spm.tmp")
        os.replace(out / ".tokenizer.spm.tmp", tok)
    if plan is None:
        from deris_core.tokenizer import BEiT3Tokenizer

        tokenizer = BEiT3Tokenizer(tok, max_token=model.cfg.max_token)
        before = evaluate(model, tokenizer, held_ds, "cpu", o.progress, "held-out refs, before")
        plan = {"name": out.resolve().name, "parent": parent, "config": model.cfg.name, "snapshot": snap,
                "train_refs": [r.id for r in train], "held_out_refs": [r.id for r in held],
                "metrics_before": before, "metrics_after": None, "created_by": _user(), "started_at": time.time(),
                "training": "", "replay": replay}
        _write_atomic(out / PLAN_FILE, json.dumps(plan, indent=1))
    return {"plan": plan, "train": train_ds, "held": held_ds, "model": model,
            "replay_images": frozenset(train_ds.images) - store_images}


def _train_and_measure(store: Store, o: Options, out: Path, prepared: dict | None, rank: int, world: int, device: str) -> dict:
    from deris_core.tokenizer import BEiT3Tokenizer
    from deris_core.train.losses import LossConfig
    from deris_core.data.nsc import NSCConfig
    from deris_core.train.trainer import StartFrom, TrainConfig, train

    plan, train_ds, held_ds, model = prepared["plan"], prepared["train"], prepared["held"], prepared["model"]
    r = o.recipe
    per_image = r.expressions_per_image if r.batch_size >= r.expressions_per_image * world else 1
    cfg = TrainConfig(
        data=f"store:{store.path.name}", out=str(out), model=model.cfg.name, tokenizer=str(out / "tokenizer.spm"),
        eval_split=None, epochs=100_000, max_steps=o.steps, max_seconds=o.minutes * 60 if o.minutes else None,
        batch_size=r.batch_size, expressions_per_image=per_image, lr=r.lr, weight_decay=r.weight_decay,
        beit3_lr_mult=r.beit3_lr_mult, backbone_lr_mult=r.backbone_lr_mult, warmup_steps=r.warmup_steps,
        seed=o.seed, device=o.device if o.device != "auto" else device.split(":")[0], threads=o.threads,
        nsc=NSCConfig(min_text_length=r.nsc_min_words), loss=LossConfig(attributes=0.0, mlm=0.0), log_every=10,
        progress=o.progress)
    t0 = time.perf_counter()
    weights = train(cfg, data=train_ds, start=StartFrom(model),
                    rotation=replay_rotation(train_ds, prepared["replay_images"], per_image, o.replay_share))
    seconds = time.perf_counter() - t0
    if rank != 0:
        return {}
    (out / "config.json").write_text(model.cfg.to_json())
    from deris_core.weights import load_trainable

    trained, _, _ = load_trainable(str(weights), str(out / "tokenizer.spm"))  # what load_predictor will read
    tokenizer = BEiT3Tokenizer(out / "tokenizer.spm", max_token=trained.cfg.max_token)
    after = evaluate(trained, tokenizer, held_ds, "cpu", o.progress, "held-out refs, after")
    budget = f"{o.minutes:g} minutes" if o.minutes else f"{o.steps} steps"
    plan.update(metrics_after=after, finished_at=time.time(), time=_time_text(out, o),
                weights_sha256=weights_digest(weights),
                training=(f"{budget} (this session {seconds:.0f} s), batch {r.batch_size} ({per_image} sentences per "
                          f"image), lr {r.lr:g} (BEiT-3 x{r.beit3_lr_mult:g}, Swin x{r.backbone_lr_mult:g}), warm-up "
                          f"{r.warmup_steps}, NSC from {r.nsc_min_words + 1} words, seed {o.seed}, {world} process(es); "
                          f"replayed: {_replay_text(plan.get('replay'))}"))
    _write_atomic(out / PLAN_FILE, json.dumps(plan, indent=1))
    _write_atomic(out / "README.md", model_card(plan))
    with (out / "log.jsonl").open("a") as f:
        f.write(json.dumps({"held_out_before": plan["metrics_before"], "held_out_after": after}) + "\n")
    problem = promotion_problem(plan["metrics_before"], after, no_target_refs=_no_target_refs(plan))
    log.info("fine-tune %s done in %.0f s: held-out %s -> %s%s", out.name, seconds, plan["metrics_before"], after,
             f"; not promotable: {problem}" if problem else "")
    return {"run": str(out), "weights": str(weights), "parent": plan["parent"], "snapshot": plan["snapshot"],
            "before": plan["metrics_before"], "after": after, "seconds": round(seconds, 1),
            "promotion_problem": problem, "caveat": held_out_caveat(plan)}
