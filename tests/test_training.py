"""Matching, losses, NSC, the training loop (incl. a 2-process gloo DDP step) and evaluation."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from deris_core.checkpoint import safe_torch_load
from deris_core.data.refer import load_grefcoco
from deris_core.data.training import TrainingSet, collate
from deris_core.model import build_deris
from deris_core.tokenizer import BEiT3Tokenizer, train_sentencepiece
from deris_core.data.attributes import AttributeHead, AttributeVocabulary
from deris_core.train.mlm import MaskedLanguageHead, choose_masked, masked_language_loss
from deris_core.train.losses import LossConfig, dice_loss, generalized_box_iou, masks_to_boxes, sigmoid_bce
from deris_core.train.matcher import hungarian_match
from deris_core.data.nsc import NonReferentConversion, NSCConfig, char_cosine, char_jaccard, similarity
from deris_core.train.trainer import (TrainConfig, add_vision_sincos, init_weights, model_config, sincos_positions,
                                     train_step)

ROOT = Path(__file__).resolve().parents[1]


# --- matcher -----------------------------------------------------------------------------


def _square(y0: int, x0: int, size: int = 8, n: int = 16) -> torch.Tensor:
    m = torch.zeros(n, n)
    m[y0 : y0 + size, x0 : x0 + size] = 1
    return m


def test_matcher_pairs_each_target_with_its_mask() -> None:
    a, b = _square(0, 0), _square(8, 8)
    logits = torch.stack([(b * 2 - 1) * 10, torch.full((16, 16), -10.0), (a * 2 - 1) * 10])
    refer = torch.zeros(3, 2)
    q, t = hungarian_match(refer, logits, torch.stack([a, b]))
    assert dict(zip(q.tolist(), t.tolist())) == {2: 0, 0: 1}


def test_matcher_uses_the_referring_score_to_break_ties() -> None:
    a = _square(0, 0)
    logits = torch.stack([(a * 2 - 1) * 10, (a * 2 - 1) * 10])
    refer = torch.tensor([[-3.0, 3.0], [3.0, -3.0]])  # query 1 is the confident referent
    q, t = hungarian_match(refer, logits, a[None])
    assert q.tolist() == [1] and t.tolist() == [0]


def test_matcher_without_targets() -> None:
    q, t = hungarian_match(torch.zeros(4, 2), torch.zeros(4, 8, 8), torch.zeros(0, 8, 8))
    assert len(q) == len(t) == 0


# --- losses --------------------------------------------------------------------------------


def test_bce_and_dice_known_values() -> None:
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0]])
    target = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    assert sigmoid_bce(logits, target).item() == pytest.approx(math.log(2))
    # p = 0.5 everywhere: 1 - (2 * 1 + 1) / (2 + 2 + 1) = 0.4
    assert dice_loss(logits, target).item() == pytest.approx(0.4)
    perfect = torch.tensor([[50.0, 50.0, -50.0, -50.0]])
    assert dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)


def test_giou_and_boxes_known_values() -> None:
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    # IoU 1/7, enclosing 9, union 7: 1/7 - 2/9
    assert generalized_box_iou(a, b).item() == pytest.approx(1 / 7 - 2 / 9)
    m = torch.zeros(1, 10, 20)
    m[0, 2:4, 5:15] = 1
    assert masks_to_boxes(m)[0].tolist() == pytest.approx([0.5, 0.3, 0.5, 0.2])


# --- NSC -----------------------------------------------------------------------------------


def test_similarity_hand_computed() -> None:
    # "abc" vs "abd": common bag {a, b} = 2; union bag 4; lengths 3 and 3.
    assert char_jaccard("abc", "abd") == pytest.approx(0.5)
    assert char_cosine("abc", "abd") == pytest.approx(2 / 3)
    assert similarity("abc", "abd") == pytest.approx((0.5 + 2 / 3) / 2)
    # Bags, not sets: "aab" vs "ab": common 2, union 3, cosine 2 / sqrt(6).
    assert char_jaccard("aab", "ab") == pytest.approx(2 / 3)
    assert char_cosine("aab", "ab") == pytest.approx(2 / math.sqrt(6))
    # Spaces count as characters (textdistance qval=1).
    assert char_jaccard("a b", "ab") == pytest.approx(2 / 3)
    assert similarity("red car", "red car") == 1.0


def test_nsc_rules() -> None:
    pool = [(1, "the red circle"), (2, "the red circle"), (2, "all blue squares below"), (3, "zzz qqq www yyy")]
    nsc = NonReferentConversion(pool, NSCConfig(rate=1.0, threshold=0.6, min_text_length=2))
    rng = np.random.default_rng(0)
    for _ in range(200):
        assert nsc(1, "the red circle", False, rng) is None  # never converts a no-target sample
        got = nsc(2, "the red circle", True, rng)
        # never its own image, never too similar, always longer than min_text_length words
        assert got is None or (got == "zzz qqq www yyy")
        got = nsc(3, "the red circle", True, rng)
        assert got in (None, "all blue squares below") and (got is None or similarity(got, "the red circle") < 0.6)
    assert similarity("the red circle", "the red circle") >= 0.6
    never = NonReferentConversion(pool, NSCConfig(rate=0.0))
    assert all(never(2, "x", True, rng) is None for _ in range(50))
    with pytest.raises(ValueError):
        NonReferentConversion(pool, NSCConfig(rate=1.5))


# --- appearance labels (training-only head) -----------------------------------------------


def test_attribute_vocabulary_and_labels() -> None:
    cats = {1: "circle", 2: "square"}
    anns = {1: {"category_id": 2, "attributes": {"color": "red", "size": "large"}},
            2: {"category_id": 1, "attributes": {"color": "blue", "size": "large", "note": True}},
            3: {"category_id": 1}}
    vocab = AttributeVocabulary.from_annotations(anns, cats)
    # "size" has one value only (nothing to learn) and booleans are not labels.
    assert vocab.names == ["category", "color"] and vocab.values == [["circle", "square"], ["blue", "red"]]
    assert vocab.labels(anns[1], cats) == [1, 1]
    assert vocab.labels(anns[3], cats) == [0, -1]  # no attributes: unknown, ignored by the loss


def test_attribute_losses_known_values() -> None:
    vocab = AttributeVocabulary(["category", "color"], [["a", "b"], ["x", "y", "z", "w"]])
    head = AttributeHead(4, vocab)
    for p in head.parameters():
        torch.nn.init.zeros_(p)
    labels = torch.tensor([[0, 3], [1, -1]])
    # Uniform logits: CE = log(K) per known label; summed, / num_instances, averaged over labels.
    expected = (2 * math.log(2) + 1 * math.log(4)) / 2 / 2
    assert head.loss(torch.randn(2, 4), labels, num_instances=2.0).item() == pytest.approx(expected)
    # Pooling: a level that is 1 inside instance 0 and 3 inside instance 1; a classifier that reads
    # channel 0 sees exactly those means.
    masks = torch.zeros(2, 8, 8)
    masks[0, :4], masks[1, 4:] = 1, 1
    level = torch.zeros(1, 4, 4, 4)
    level[0, 0, :2], level[0, 0, 2:] = 1.0, 3.0
    head.pooled_classifiers[0].weight.data[1, 0] = 1.0  # logit of class "b" = pooled channel 0
    got = head.pooled_loss([level], [masks], [labels], num_instances=2.0).item()
    ce = -math.log(1 / (1 + math.e)) + -math.log(math.e**3 / (1 + math.e**3))  # labels a (logit 0 vs 1), b (0 vs 3)
    assert got == pytest.approx((ce + math.log(4)) / 2 / 2, rel=1e-5)


def test_masked_language_choice_and_loss() -> None:
    ids = torch.tensor([[0, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 2], [0, 20, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1]])
    pad = (ids == 1).long()
    m = choose_masked(ids, pad, rate=0.3, seed=5)
    assert torch.equal(m, choose_masked(ids, pad, rate=0.3, seed=5))  # deterministic per (expression, seed)
    assert not m[ids <= 2].any()  # never BOS, EOS or padding
    assert int(m[0].sum()) == 3 and int(m[1].sum()) == 1  # ~rate of the pieces, at least one
    from deris_core.config import get_config
    from deris_core.model.beit3 import BEiT3Encoder

    cfg = get_config("deris-tiny").beit3
    enc = BEiT3Encoder(cfg)
    head = MaskedLanguageHead(cfg.embed_dim, cfg.vocab_size)
    torch.nn.init.zeros_(head.proj.weight)
    torch.nn.init.zeros_(head.proj.bias)
    image = torch.randn(2, 3, cfg.img_size, cfg.img_size)
    loss = masked_language_loss(enc, head, image, ids, pad, 0.3, 5, num_samples=2.0)
    assert loss.item() == pytest.approx(math.log(cfg.vocab_size), rel=1e-5)  # uniform: log V per expression


# --- a small dataset and model shared by the loop tests ------------------------------------


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from deris_core.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, seed=3, images=12)
    return root


@pytest.fixture(scope="module")
def tokenizer(tiny_data: Path, tmp_path_factory) -> BEiT3Tokenizer:
    data = load_grefcoco(tiny_data)
    path = train_sentencepiece(sorted({s.sentence for s in data.samples}), tmp_path_factory.mktemp("tok") / "tok", vocab_size=120)
    return BEiT3Tokenizer(path, max_token=24)


def _model(tokenizer: BEiT3Tokenizer, seed: int = 0):
    cfg = model_config(TrainConfig(data="", out="", model="deris-small", tokenizer=None), tokenizer)
    torch.manual_seed(seed)
    model = build_deris(cfg).train()
    init_weights(model)
    return cfg, model


def test_fresh_init_keeps_word_identity(tokenizer: BEiT3Tokenizer) -> None:
    _, model = _model(tokenizer)
    assert 0.9 < float(model.cognition.beit3.text_embed.weight.detach().std()) < 1.1  # unit-variance word embeddings
    # two expressions that differ in one word still differ after the encoder (cosine well below 1)
    enc = model.cognition.beit3.eval()
    ids = torch.tensor([[0, 5, 6, 7, 2], [0, 5, 6, 8, 2]])
    with torch.no_grad():
        vt = enc.embed_image(torch.randn(1, 3, enc.cfg.img_size, enc.cfg.img_size)).expand(2, -1, -1)
        _, _, text = enc(vt, ids, torch.zeros_like(ids))
    assert float(torch.nn.functional.cosine_similarity(text[0, 3], text[1, 3], dim=0)) < 0.9


def test_sincos_positions_layout() -> None:
    table = sincos_positions(4, 8).view(4, 4, 8)  # [row, col, channel]
    assert torch.allclose(table.norm(dim=-1), torch.full((4, 4), 2.0))  # sqrt(8 / 2)
    # channels 0-3 depend on the row only, 4-7 on the column only; position (0, 0) is sin 0, cos 0
    assert torch.equal(table[:, 0, :4], table[:, 3, :4]) and torch.equal(table[0, :, 4:], table[3, :, 4:])
    assert table[0, 0].tolist() == [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    assert math.isclose(float(table[1, 2, 0]), math.sin(1.0), rel_tol=1e-6)  # row 1, frequency 1
    assert math.isclose(float(table[1, 2, 5]), math.sin(2 / 100), rel_tol=1e-6)  # column 2, frequency 1e4^(-1/2)
    with pytest.raises(ValueError, match="multiple of 4"):
        sincos_positions(4, 6)


def test_add_vision_sincos_changes_only_the_patch_rows(tokenizer: BEiT3Tokenizer) -> None:
    _, model = _model(tokenizer)
    table = model.cognition.beit3.vision_pos.weight
    before = table.detach().clone()
    add_vision_sincos(model)
    grid = model.cfg.beit3.grid_size
    assert table.shape[0] == 3 + grid * grid
    assert torch.equal(table[:3], before[:3])  # unused rows and the CLS token
    assert torch.allclose(table[3:] - before[3:], sincos_positions(grid, table.shape[1]), atol=1e-6)


def test_train_step_reduces_loss(tiny_data: Path, tokenizer: BEiT3Tokenizer) -> None:
    cfg, model = _model(tokenizer)
    ds = TrainingSet(load_grefcoco(tiny_data, "train"), tokenizer, cfg)
    batch = collate([ds[i] for i in range(4)])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first = train_step(model, opt, batch, LossConfig(), clip_grad=1.0)["total"]
    for _ in range(6):
        last = train_step(model, opt, batch, LossConfig(), clip_grad=1.0)["total"]
    assert last < first


def test_groups_partition_each_epoch(tiny_data: Path, tokenizer: BEiT3Tokenizer) -> None:
    data = load_grefcoco(tiny_data, "train")
    cfg, _ = _model(tokenizer)
    single = TrainingSet(data, tokenizer, cfg)
    assert single.groups == [[i] for i in range(len(data))]  # K=1: the plain per-sample dataset
    ds = TrainingSet(data, tokenizer, cfg, seed=3, expressions_per_image=3)
    per_image = {}
    for s in data.samples:
        per_image[s.image_id] = per_image.get(s.image_id, 0) + 1
    assert max(per_image.values()) > 3  # the fixture has images that need several groups
    seen = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        assert len(ds) == sum(math.ceil(n / 3) for n in per_image.values())
        flat = [i for g in ds.groups for i in g]
        assert sorted(flat) == list(range(len(data)))  # every sample exactly once
        for g in ds.groups:
            assert 1 <= len(g) <= 3 and len({data.samples[i].image_id for i in g}) == 1
        seen.append([sorted(g) for g in ds.groups])
    assert seen[0] != seen[1]  # partners change between epochs
    again = TrainingSet(data, tokenizer, cfg, seed=3, expressions_per_image=3)
    again.set_epoch(1)
    assert [sorted(g) for g in again.groups] == seen[1]  # reproducible for a seed
    with pytest.raises(ValueError, match="at least 1"):
        TrainingSet(data, tokenizer, cfg, expressions_per_image=0)


def test_a_rotation_takes_turns_through_its_images(tiny_data: Path, tokenizer: BEiT3Tokenizer) -> None:
    """Rotating images (fine-tuning's replay) give a fixed number of groups an epoch, the next ones of
    one cycle through all of them; the other images are in every epoch, whole; nothing of the rotating
    images stays in memory."""
    from deris_core.data.training import Rotation

    data = load_grefcoco(tiny_data, "train")
    cfg, _ = _model(tokenizer)
    images = sorted({s.image_id for s in data.samples})
    rotating = frozenset(images[len(images) // 2:])
    fixed = [i for i, s in enumerate(data.samples) if s.image_id not in rotating]
    ds = TrainingSet(data, tokenizer, cfg, seed=3, expressions_per_image=2, rotation=Rotation(rotating, 3))
    n_rot_groups = sum(math.ceil(sum(s.image_id == i for s in data.samples) / 2) for i in rotating)
    assert n_rot_groups > 3
    epochs = math.ceil(n_rot_groups / 3)
    turned: list[int] = []
    lengths = set()
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        lengths.add(len(ds))
        flat = [i for g in ds.groups for i in g]
        assert sorted(i for i in flat if i in set(fixed)) == fixed  # the store's refs: every epoch, once
        rot = [g for g in ds.groups if data.samples[g[0]].image_id in rotating]
        assert len(rot) == 3
        turned += [i for g in rot for i in g]
    assert len(lengths) == 1  # the same length every epoch (DataLoader, DistributedSampler)
    rot_samples = [i for i, s in enumerate(data.samples) if s.image_id in rotating]
    assert set(turned) == set(rot_samples)  # one cycle covers every rotating sample ...
    assert len(turned) - len(set(turned)) < 3 * 2  # ... and repeats at most the wrap-around of its last turn
    for k in range(len(ds)):
        ds[k]
    assert set(ds._views) == set(images) - rotating  # the store's images cached, the rotating ones decoded per turn
    with pytest.raises(ValueError, match="at least one group"):
        TrainingSet(data, tokenizer, cfg, rotation=Rotation(rotating, 0))


def test_grouped_batch_equals_one_image_copy_per_expression(tiny_data: Path, tokenizer: BEiT3Tokenizer) -> None:
    """Encoding a shared image once gives the loss and gradients of encoding it per expression."""
    cfg, model = _model(tokenizer)
    ds = TrainingSet(load_grefcoco(tiny_data, "train"), tokenizer, cfg, expressions_per_image=3)
    groups = sorted(ds.groups, key=len, reverse=True)[:2]
    grouped = collate([[ds.sample(i) for i in g] for g in groups])
    assert grouped.image.shape[0] == 2 and grouped.size == sum(map(len, groups)) > 2
    idx = grouped.image_index
    copies = dataclasses.replace(grouped, image=grouped.image[idx], image_mini=grouped.image_mini[idx],
                                 image_index=torch.arange(grouped.size))
    grads = []
    for batch in (grouped, copies):
        m, head, mlm = copy.deepcopy(model), _head(ds, cfg), _mlm(cfg)
        opt = torch.optim.SGD([*m.parameters(), *head.parameters(), *mlm.parameters()], lr=0.0)
        logs = train_step(m, opt, batch, LossConfig(), clip_grad=0.0, attribute_head=head, mlm_head=mlm, step=5)
        named = [*m.named_parameters(), *(("head." + k, p) for k, p in head.named_parameters()),
                 *(("mlm." + k, p) for k, p in mlm.named_parameters())]
        grads.append((logs["total"], {k: p.grad.clone() for k, p in named if p.grad is not None}))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    assert set(grads[0][1]) == set(grads[1][1])
    for k, g in grads[0][1].items():
        torch.testing.assert_close(g, grads[1][1][k], rtol=1e-4, atol=1e-6, msg=lambda m: f"{k}: {m}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _head(ds: TrainingSet, cfg) -> AttributeHead:
    torch.manual_seed(1)
    return AttributeHead(cfg.hidden_dim, ds.vocab)


def _mlm(cfg) -> MaskedLanguageHead:
    torch.manual_seed(2)
    return MaskedLanguageHead(cfg.beit3.embed_dim, cfg.beit3.vocab_size)


def _uneven_groups(ds: TrainingSet) -> list[list[dict]]:
    """A 3-expression group and a 1- or 2-expression group: the processes hold unequal shares."""
    big = next(g for g in ds.groups if len(g) == 3)
    small = next(g for g in ds.groups if len(g) < 3)
    return [[ds.sample(i) for i in big], [ds.sample(i) for i in small]]


def _ddp_worker(rank: int, world: int, port: int, data: str, tok: str, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    tokenizer = BEiT3Tokenizer(tok, max_token=24)
    cfg, model = _model(tokenizer)
    ds = TrainingSet(load_grefcoco(data, "train"), tokenizer, cfg, expressions_per_image=3)
    batch = collate([_uneven_groups(ds)[rank]])
    net = DistributedDataParallel(model)
    head, mlm = _head(ds, cfg), _mlm(cfg)
    opt = torch.optim.SGD([*model.parameters(), *head.parameters(), *mlm.parameters()], lr=0.01)
    train_step(net, opt, batch, LossConfig(), clip_grad=0.0, world_size=world, attribute_head=head, mlm_head=mlm, step=3)
    if rank == 0:
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        state.update({"head." + k: v.detach().clone() for k, v in head.state_dict().items()})
        state.update({"mlm." + k: v.detach().clone() for k, v in mlm.state_dict().items()})
        torch.save(state, out)
    dist.destroy_process_group()


def test_ddp_two_processes_equal_one_process(tiny_data: Path, tokenizer: BEiT3Tokenizer, tmp_path: Path) -> None:
    out = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tiny_data), str(tokenizer.model_file), str(out)), nprocs=2, join=True)
    ddp_state = torch.load(out, weights_only=True)
    cfg, model = _model(tokenizer)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ds = TrainingSet(load_grefcoco(tiny_data, "train"), tokenizer, cfg, expressions_per_image=3)
    batch = collate(_uneven_groups(ds))
    # SGD without clipping: the update is lr times the gradient, so this compares gradients (clipping
    # would shrink a wrongly normalised term below the tolerance).
    # (Adam's first step is ~lr * sign(g) and would amplify rounding in near-zero gradients.)
    head, mlm = _head(ds, cfg), _mlm(cfg)
    opt = torch.optim.SGD([*model.parameters(), *head.parameters(), *mlm.parameters()], lr=0.01)
    train_step(model, opt, batch, LossConfig(), clip_grad=0.0, attribute_head=head, mlm_head=mlm, step=3)
    changed, largest = 0, 0.0
    state = dict(model.state_dict())
    state.update({"head." + k: v for k, v in head.state_dict().items()})
    state.update({"mlm." + k: v for k, v in mlm.state_dict().items()})
    before.update({"head." + k: v for k, v in _head(ds, cfg).state_dict().items()})
    before.update({"mlm." + k: v for k, v in _mlm(cfg).state_dict().items()})
    assert set(state) == set(ddp_state)
    for k, v in state.items():
        torch.testing.assert_close(ddp_state[k], v, rtol=1e-4, atol=1e-5, msg=lambda m: f"{k}: {m}")
        changed += int(not torch.equal(before[k], v))
        largest = max(largest, float((v - before[k]).abs().max()))
    assert changed > 50 and largest > 100 * 1e-5  # real updates, far above the tolerance


def test_training_cli_resume_and_evaluate(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    cmd = [sys.executable, "-m", "deris_core.train", "--data", str(tiny_data), "--out", str(run), "--epochs", "1",
           "--max-steps", "2", "--batch-size", "4", "--expressions-per-image", "2", "--vocab-size", "120",
           "--eval-limit", "6", "--log-every", "1"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (run / "model.safetensors").is_file() and (run / "tokenizer.spm").is_file()
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    epoch = [r for r in records if "samples_per_s" in r][-1]
    assert epoch["samples_per_s"] > 0 and "val_gIoU" in epoch
    assert 2 * 2 <= epoch["samples"] <= 2 * 4  # 2 steps of 2 groups, each 1-2 expressions of one image
    # Resume: a second run with more epochs continues from the saved step.
    cmd2 = [c if c != "1" else "2" for c in cmd]
    cmd2[cmd2.index("--max-steps") + 1] = "3"
    cmd2 += ["--box-l1", "5", "--box-giou", "2", "--vision-pos-sincos"]
    r = subprocess.run(cmd2, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "resumed from" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    loss = json.loads((run / "train_config.json").read_text())["loss"]
    assert (loss["box_l1"], loss["box_giou"]) == (5.0, 2.0)
    # The position table is added once per run folder: on this resume, and not on the next one.
    assert "added a 2-D sine-cosine table" in r.stdout
    assert safe_torch_load(run / "trainer_state.pt")["vision_pos_sincos"] is True
    cmd3 = list(cmd2)
    cmd3[cmd3.index("--epochs") + 1], cmd3[cmd3.index("--max-steps") + 1] = "3", "4"
    r = subprocess.run(cmd3, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "resumed from" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    assert "added a 2-D sine-cosine table" not in r.stdout
    # Evaluation CLI on the trained weights.
    r = subprocess.run([sys.executable, "-m", "deris_core.tools.evaluate", "--weights", str(run / "model.safetensors"),
                        "--data", str(tiny_data), "--split", "testA", "--json", "--device", "cpu"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert set(res["gres"]) >= {"gIoU", "cIoU", "N_acc", "T_acc", "Pr@0.7", "Pr@0.8", "Pr@0.9"}
    assert set(res["ris"]) >= {"mIoU", "oIoU", "MaskACC@0.5", "MaskACC@0.9"}
    r = subprocess.run([sys.executable, "-m", "deris_core.tools.evaluate", "--weights", str(run / "model.safetensors"),
                        "--data", str(tmp_path / "nowhere"), "--json"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "missing file" in r.stderr and "Traceback" not in r.stderr
    # A grouping the batch cannot hold is refused before anything is written.
    bad = tmp_path / "bad"
    r = subprocess.run([*cmd, "--out", str(bad), "--expressions-per-image", "8"], cwd=ROOT, env=env,  # batch 4
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--expressions-per-image" in r.stderr and "Traceback" not in r.stderr
    assert not bad.exists()
    # So is a position table on top of a pretrained BEiT-3.
    r = subprocess.run([*cmd, "--out", str(bad), "--vision-pos-sincos", "--init-beit3", str(tmp_path / "beit3.pth")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--vision-pos-sincos" in r.stderr and "Traceback" not in r.stderr
    assert not bad.exists()
