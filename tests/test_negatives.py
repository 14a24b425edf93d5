"""Hard negatives: proposals follow the NSC rule of deris_core/data/nsc.py and never bring a sentence
of the same image; the model's verdict is stored (no-target ones as predicted refs, found targets
first in the queue); people's decisions go through the permission table and name who decided."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.curate.negatives import passes, propose, run_negatives
from app.services import Actor, NegativeService, Refused
from app.store import ConflictError, Store, StoreError
from app.store.negatives import negative_queue
from deris_core.data.nsc import NonReferentConversion, NSCConfig, similarity
from tests.builders import noise_image, prediction, rect_mask

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = {  # image -> people's sentences (all with a target)
    0: ["the red circle", "the big blue square on the left"],
    1: ["the red circle", "two yellow stars"],  # "the red circle" is on image 0 too
    2: ["the red circles", "a green triangle below everything"],  # near copy of "the red circle"
    3: ["star", "the purple hexagon at the top right corner"],  # "star" is one word
}


def _store(tmp_path: Path) -> tuple[Store, list[int]]:
    s = Store(tmp_path / "n.sqlite")
    ids = [s.add_image(noise_image(k)) for k in SENTENCES]
    for k, sents in SENTENCES.items():
        for text in sents:
            s.save_ref(ids[k], [text], masks=[rect_mask()], author="ann")
    return s, ids


def test_proposals_follow_the_nsc_rule_and_never_bring_a_sentence_of_the_same_image(tmp_path: Path) -> None:
    s, ids = _store(tmp_path)
    cfg = NSCConfig(threshold=0.6, min_text_length=1)
    props = propose(s, per_image=4, cfg=cfg, seed=0)
    assert props, "nothing proposed"
    own = {ids[k]: set(v) for k, v in SENTENCES.items()}
    where = {text: {ids[k] for k, v in SENTENCES.items() if text in v} for v in SENTENCES.values() for text in v}
    for p in props:
        assert p.image_id not in where[p.sentence] and p.sentence not in own[p.image_id]
        assert p.source_image_id != p.image_id and p.source_image_id in where[p.sentence]
        assert len(p.sentence.split()) > cfg.min_text_length
        assert all(similarity(p.sentence, o) < cfg.threshold for o in own[p.image_id])
    assert "star" not in {p.sentence for p in props}  # too short
    assert "the red circle" not in {p.sentence for p in props if p.image_id == ids[2]}  # too similar to "the red circles"
    assert len({(p.image_id, p.sentence) for p in props}) == len(props)
    assert max(sum(p.image_id == i for p in props) for i in ids) <= 4
    # the same seed draws the same; another seed may draw others
    assert propose(s, per_image=4, cfg=cfg, seed=0) == props


def test_the_rule_is_nscs_rule_on_every_pair(tmp_path: Path) -> None:
    """For an image with one sentence, ``passes`` accepts exactly the pool entries NSC's training loop accepts."""
    s, ids = _store(tmp_path)
    pool = [(ids[k], t) for k, v in SENTENCES.items() for t in v]
    for cfg in (NSCConfig(), NSCConfig(threshold=0.8, min_text_length=2)):
        nsc = NonReferentConversion(pool, NSCConfig(rate=1.0, threshold=cfg.threshold,
                                                    min_text_length=cfg.min_text_length, max_tries=1))
        for image, own in pool:
            for other_image, other in pool:
                rng = _Fixed([(other_image, other)])
                nsc.pool = rng.pool  # NSC draws exactly this candidate once
                expected = nsc(image, own, True, rng) is not None and len(other.split()) > cfg.min_text_length
                assert passes(other, other_image, image, {own}, cfg) == expected, (image, own, other)


class _Fixed:
    """A generator stand-in that makes NonReferentConversion draw the first pool entry and always convert."""

    def __init__(self, pool):
        self.pool = pool

    def random(self):
        return 0.0

    def integers(self, n):
        return 0


class _Scripted:
    """A predictor stand-in: sentences in ``found`` get one target (score 0.9 or their own), others none."""

    def __init__(self, found: dict[str, float]) -> None:
        self.found = found
        self.asked: list[tuple[tuple, str]] = []

    def set_image(self, rgb):
        return rgb.shape[:2]

    def predict_batch(self, sentences, image):
        out = []
        for text in sentences:
            self.asked.append((image, text))
            h, w = image
            score = self.found.get(text, 0.1 + (len(text) % 20) / 100)
            out.append(prediction([rect_mask(h=h, w=w), rect_mask((12, 12, 20, 20), h=h, w=w)], [score, 0.05]))
        return out


def test_the_models_verdict_is_stored_and_found_targets_come_first(tmp_path: Path) -> None:
    s, ids = _store(tmp_path)
    first = propose(s, per_image=2, cfg=NSCConfig(min_text_length=1))
    found = {first[0].sentence: 0.95, first[-1].sentence: 0.7}
    model = _Scripted(found)
    res = run_negatives(s, model, "scripted|cfg", per_image=2, cfg=NSCConfig(min_text_length=1), progress=False)
    assert res["proposed"] == len(first) and res["found_target"] == sum(
        1 for p in first if p.sentence in found) and res["no_target_refs"] == res["proposed"] - res["found_target"]
    rows, total = negative_queue(s, 0, 100, "open")
    assert total == len(first)
    assert [n.found_target for n in rows] == sorted((n.found_target for n in rows), reverse=True)
    assert rows[0].top_score == pytest.approx(0.95) and rows[0].found_target and rows[0].ref_id is None
    for n in rows:
        origin, doubt, ref_id = s.read("SELECT origin, uncertainty, ref_id FROM predictions WHERE image_id = ? AND "
                                       "sentence = ?", (n.image_id, n.sentence))[0]
        assert origin == "negatives" and doubt is not None and ref_id == n.ref_id
        if not n.found_target:
            rec = s.ref(n.ref_id)
            assert rec.no_target and rec.status == "predicted" and rec.author == "model:scripted"
            assert rec.sentences == [n.sentence] and rec.image_id == n.image_id
    # a rerun proposes nothing new and asks the model nothing
    again = _Scripted(found)
    assert run_negatives(s, again, "scripted|cfg", per_image=2, cfg=NSCConfig(min_text_length=1),
                         progress=False)["proposed"] == 0 and again.asked == []
    # the model's own no-target refs are not sources of new proposals, nor is a sentence already asked
    more = propose(s, per_image=4, cfg=NSCConfig(min_text_length=1))
    asked = {(n.image_id, n.sentence) for n in rows}
    assert not asked & {(p.image_id, p.sentence) for p in more}


def test_decisions_are_the_persons_and_go_through_the_permission_table(tmp_path: Path) -> None:
    s, ids = _store(tmp_path)
    cfg = NSCConfig(min_text_length=1)
    first = propose(s, per_image=2, cfg=cfg)
    run_negatives(s, _Scripted({first[0].sentence: 0.95}), "scripted|cfg", per_image=2, cfg=cfg, progress=False)
    svc = NegativeService(s)
    rows, _ = negative_queue(s, 0, 100, "open")
    hit = rows[0]
    predicted, other = [n for n in rows if not n.found_target][:2]
    assert hit.found_target
    with pytest.raises(Refused, match="type your name"):
        svc.decide(Actor(""), hit.id, "no_target")
    with pytest.raises(Refused, match="tool"):
        svc.decide(Actor.tool("model:x"), hit.id, "no_target")
    with pytest.raises(StoreError, match="unknown decision"):
        svc.decide(Actor("ann"), hit.id, "maybe")
    assert s.read("SELECT COUNT(*) FROM negatives WHERE decision <> ''") == [(0,)]  # nothing written
    # Y where the model found a target: a new no-target ref by the person
    done = svc.decide(Actor("ann"), hit.id, "no_target")
    rec = s.ref(done.ref_id)
    assert (done.decision, done.decided_by) == ("no_target", "ann") and done.decided_at
    assert rec.no_target and rec.status == "done" and rec.author == "ann" and rec.sentences == [hit.sentence]
    # Y on a ref someone changed meanwhile (in Annotate): refused, nothing written
    seen = s.ref(predicted.ref_id).version
    s.save_ref(predicted.image_id, [predicted.sentence, "said another way"], no_target=True, status="predicted",
               author=s.ref(predicted.ref_id).author, ref_id=predicted.ref_id, expected_version=seen, actor="carl")
    with pytest.raises(ConflictError, match=f"ref {predicted.ref_id} of negative {predicted.id} was changed meanwhile by carl"):
        svc.decide(Actor("bob"), predicted.id, "no_target", seen="", seen_version=seen)
    assert svc.get(predicted.id).decision == ""
    # Y on the model's predicted no-target ref: that ref becomes the person's
    done = svc.decide(Actor("bob"), predicted.id, "no_target", seen="", seen_version=s.ref(predicted.ref_id).version)
    assert done.ref_id == predicted.ref_id
    rec = s.ref(done.ref_id)
    assert rec.status == "done" and rec.author == "bob" and [e.action for e in s.events(rec.id)] == ["predict", "edit", "edit"]
    assert s.events(rec.id)[-1].detail["negative"] == predicted.id
    # someone decided meanwhile: the screen's decision is refused, nothing changes
    with pytest.raises(ConflictError, match="decided meanwhile by bob"):
        svc.decide(Actor("ann"), predicted.id, "refers", seen="")
    assert svc.get(predicted.id).decision == "no_target"
    # N: recorded, the ref is left to the Annotate view
    said = svc.decide(Actor("ann"), other.id, "refers")
    assert (said.decision, said.decided_by, said.ref_id) == ("refers", "ann", other.ref_id)
    assert s.ref(other.ref_id).status == "predicted"
    # with accounts, a decided ref is its author's: another annotator cannot turn it, a reviewer can
    cat = Actor("cat", frozenset({"annotator"}), accounts=True)
    with pytest.raises(Refused, match="made by bob"):
        svc.decide(cat, predicted.id, "refers")
    rev = Actor("rev", frozenset({"annotator", "reviewer"}), accounts=True)
    assert svc.decide(rev, predicted.id, "refers").decided_by == "rev"
    # taking back "no target": the no-target ref that decision saved no longer awaits review as an answer
    back = s.ref(predicted.ref_id)
    assert back.status == "draft" and back.no_target and s.events(back.id)[-1].detail["decision"] == "refers"
    assert negative_queue(s, 0, 100, "open")[1] == len(rows) - 3
    assert negative_queue(s, 0, 100, "decided")[1] == 3


def test_the_command_line(tmp_path: Path) -> None:
    db = tmp_path / "cli.sqlite"
    Store(db).close()
    r = subprocess.run([sys.executable, "-m", "app.curate", "negatives", "--db", str(db), "--per-image", "0"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--per-image must be at least 1" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "app.curate", "negatives", "--db", str(db), "--json"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert '"proposed": 0' in r.stdout and "nothing to draw from" in r.stdout  # an empty store, said plainly


def _text(html: str) -> str:
    return re.sub("<[^>]+>", "", html)


def test_the_verification_view_handlers_without_a_server(tmp_path: Path) -> None:
    from app.services import Services
    from app.views import verify
    from app.views.on_screen import screen_key

    s, ids = _store(tmp_path)
    svc = Services(None, s)
    assert "No proposed negatives" in verify.show(svc, 0, "all").info
    cfg = NSCConfig(min_text_length=1)
    first = propose(s, per_image=2, cfg=cfg)
    run_negatives(s, _Scripted({first[0].sentence: 0.95}), "scripted|cfg", per_image=2, cfg=cfg, progress=False)
    total = len(first)
    seen = verify.show(svc, 0, "open")
    pos, shown = seen.pos, seen.shown
    assert f"1 / {total} to decide" in _text(seen.info) and seen.picture is not None and "finds a target" in seen.sentence
    assert seen.on_screen == screen_key(shown)
    with pytest.raises(Refused, match="type your name"):
        verify.refers_to_nothing(svc, shown, "", pos, "open")
    # the page sends the key of the negative it shows: any other is refused, nothing decided
    with pytest.raises(Refused, match="this negative is no longer on screen"):
        verify.refers_to_nothing(svc, shown, "ann", pos, "open", on_screen=f"{shown[0] + 1}:{shown[1]}:{shown[2]}")
    assert negative_queue(s, 0, 100, "open")[1] == total
    key = screen_key(shown)
    decided = verify.refers_to_nothing(svc, shown, "ann", pos, "open", on_screen=key)
    pos, shown = decided.shown.pos, decided.shown.shown
    with pytest.raises(Refused, match="no longer on screen"):  # a second tap names the one just decided
        verify.refers(svc, shown, "ann", pos, "open", on_screen=key)
    assert "no target" in decided.msg and "by ann" in decided.msg
    assert f"1 / {total - 1} to decide" in _text(decided.shown.info)
    refers = verify.refers(svc, shown, "ann", pos, "open")
    handoff = refers.handoff
    assert handoff["sentence"] and handoff["image_id"] in ids and f"1 / {total - 2} to decide" in _text(refers.shown.info)
    assert "Negative" in verify.show(svc, 0, "decided").info and "decided: " in verify.show(svc, 0, "decided").info
    assert f"{total} / {total}" in _text(verify.move(svc, 10**6, 0, "all").info)  # clamped to the end


def test_an_image_without_pixels_is_skipped_and_proposed_on_the_rerun(tmp_path: Path) -> None:
    s, ids = _store(tmp_path)
    cfg = NSCConfig(min_text_length=1)
    gone = ids[0]
    res = run_negatives(s, _Scripted({}), "scripted|cfg", per_image=2, cfg=cfg, progress=False,
                        load=lambda i: None if i == gone else s.load_image(i))
    assert res["skipped_images"] == [f"image {gone}: pixels not available"]
    assert s.read("SELECT COUNT(*) FROM negatives WHERE image_id = ?", (gone,)) == [(0,)]
    again = run_negatives(s, _Scripted({}), "scripted|cfg", per_image=2, cfg=cfg, progress=False)
    assert again["images"] == 1 and again["proposed"] > 0 and again["skipped_images"] == []
