"""Per-session memory stays bounded (threshold changes on a 4096² image) and is freed when the
client leaves; undo/redo still restore exact masks."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import torch

from app.viewkit.session import MAX_HISTORY_BYTES, Session, SessionRegistry, Target
from deris_core.predictor import Prediction

SIDE = 4096


def _prediction(q: int = 10) -> Prediction:
    """A prediction on a 4096² image as the predictor makes it (logits at the model's mask size)."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(128), torch.arange(128), indexing="ij")
    logits = torch.stack([(20 - ((yy - 10 * k - 20) ** 2 + (xx - 60) ** 2).float().sqrt()) for k in range(q)])
    logits += torch.randn(logits.shape, generator=g) * 0.1
    scores = np.linspace(0.95, 0.05, q).astype(np.float32)
    return Prediction("the circles", scores, 0.9, np.zeros((q, 4), np.float32), (SIDE, SIDE), 0.7, 0.5, logits)


def test_fifty_threshold_changes_on_a_4096_image_stay_under_50_mb() -> None:
    sess = Session(image=np.zeros((SIDE, SIDE, 3), np.uint8))
    pred = _prediction()
    sess.apply_prediction(pred)
    pred.masks  # the prediction's own full-size masks are computed once, before measuring
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for k in range(50):
        sess.rethreshold(0.3 + 0.5 * (k % 7) / 7, 0.5)
        sess.prediction.masks  # what rendering touches
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    print(f"session growth after 50 threshold changes on {SIDE}x{SIDE}: {grown / 2**20:.1f} MiB, "
          f"history {sess.history_bytes() / 2**10:.0f} KiB in {len(sess.undo_stack)} steps")
    assert grown < 50 * 2**20
    assert len(sess.undo_stack) == 50 and sess.history_bytes() <= MAX_HISTORY_BYTES


def test_undo_restores_exact_masks_and_history_is_capped_in_bytes() -> None:
    rng = np.random.default_rng(0)
    sess = Session(image=np.zeros((64, 80, 3), np.uint8))
    states = []
    for k in range(5):
        sess.change()
        sess.targets.append(Target(rng.random((64, 80)) > 0.5, candidate=k))
        states.append([t.mask.copy() for t in sess.targets])
    for k in range(4, 0, -1):
        assert sess.undo()
        assert [t.candidate for t in sess.targets] == list(range(k))
        for a, b in zip(sess.targets, states[k - 1]):
            np.testing.assert_array_equal(a.mask, b)
    assert sess.redo() and len(sess.targets) == 2
    # noise masks compress badly: the byte cap drops the oldest steps
    big = Session(image=np.zeros((1024, 1024, 3), np.uint8))
    big.targets = [Target(rng.random((1024, 1024)) > 0.5)]
    for _ in range(50):
        big.change()
    assert big.history_bytes() <= MAX_HISTORY_BYTES and 1 <= len(big.undo_stack) < 50


def test_a_client_leaving_frees_its_session() -> None:
    reg = SessionRegistry()
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    sess = Session(image=np.zeros((SIDE, SIDE, 3), np.uint8))
    sess.apply_prediction(_prediction())
    reg.track("client-a", sess)
    reg.track(None, Session())  # clients without a session hash (scripted API calls) are not tracked
    assert len(reg) == 1
    held = tracemalloc.get_traced_memory()[0] - base
    assert reg.release("client-a") and not reg.release("client-a")
    gc.collect()
    left = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    print(f"a 4096² session held {held / 2**20:.0f} MiB; after the client left {left / 2**20:.1f} MiB")
    assert sess.image is None and sess.prediction is None and sess.targets == [] and len(reg) == 0
    assert held > 60 * 2**20 and left < 5 * 2**20  # the image alone is 48 MiB; the emptied gr.State stays


def test_undo_across_a_mask_threshold_change_brings_back_the_old_pixels() -> None:
    sess = Session(image=np.zeros((SIDE, SIDE, 3), np.uint8))
    pred = _prediction(4)
    sess.apply_prediction(pred)
    before = [(t.candidate, t.mask.copy()) for t in sess.targets]
    sess.rethreshold(0.7, 0.2)
    assert sess.targets[0].mask.sum() > before[0][1].sum()
    assert sess.undo()
    assert [(t.candidate) for t in sess.targets] == [c for c, _ in before]
    for t, (_, m) in zip(sess.targets, before):
        np.testing.assert_array_equal(t.mask, m)
