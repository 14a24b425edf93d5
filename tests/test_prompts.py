"""The canvas's prompt tools, server side (app/views/prompts.py, app/services/refine.py), without a
browser: the canvas sends the selected instance's prompts (and its starting mask), the handler runs
the studio's refiner and answers with the mask as RLE. Undo is the same call with the last prompt
dropped; "refine this candidate" sends the candidate's mask as the prior; what is saved is the mask
that came back."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.refine.clicks import iou
from app.services import ModelHolder, RefinerHolder, Services, image_digest
from app.viewkit.session import Session
from app.views import annotate, prompts
from app.views.canvas import apply_canvas, canvas_value, decode_mask, encode_mask, make_canvas
from tests.builders import prediction


def _scene(h: int = 120, w: int = 160):
    """A grey picture with a blue disc (the object) and a blue square (a second object of the same colour)."""
    image = np.full((h, w, 3), 120, np.uint8)
    disc = np.zeros((h, w), np.uint8)
    cv2.circle(disc, (50, 60), 25, 1, -1)
    image[disc > 0] = (30, 60, 210)
    image[40:80, 100:140] = (30, 60, 210)
    image = np.clip(image.astype(int) + np.random.default_rng(0).integers(-6, 7, image.shape), 0, 255).astype(np.uint8)
    return image, disc > 0


@pytest.fixture
def studio(tmp_path: Path):
    from app.store import Store

    svc = Services(ModelHolder(None, "no model"), Store(tmp_path / "p.sqlite"))
    image, disc = _scene()
    square = np.zeros(disc.shape, bool)
    square[40:80, 100:140] = True
    half = disc.copy()
    half[:, 50:] = False  # a candidate that found only the left half of the disc
    sess = Session(image=image, digest=image_digest(image), expression="the blue disc",
                   prediction=prediction([half, square], [0.9, 0.2]))
    svc.sessions.track("client-1", sess)
    yield svc, sess, disc, half
    svc.store.close()


def _ask(svc, sess, prompt_list, prior=None) -> dict:
    h, w = sess.image.shape[:2]
    return prompts.refine_on_canvas(svc, {"image": sess.digest, "w": w, "h": h, "prompts": prompt_list,
                                          "prior": encode_mask(prior) if prior is not None else None})


def _mask(answer: dict, sess) -> np.ndarray:
    assert "error" not in answer, answer
    return decode_mask(answer["rle"], *sess.image.shape[:2])


def test_a_positive_click_makes_the_instance_a_negative_click_and_a_box_refine_it_and_undo_is_exact(studio) -> None:
    svc, sess, disc, _ = studio
    pos = {"kind": "point", "x": 50, "y": 60, "label": 1}
    one = _mask(_ask(svc, sess, [pos]), sess)
    assert iou(one, disc) > 0.85
    neg = {"kind": "point", "x": 120, "y": 60, "label": 0}
    box = {"kind": "box", "box": [20, 30, 85, 95]}
    answer = _ask(svc, sess, [pos, neg, box])
    three = _mask(answer, sess)
    assert iou(three, disc) > 0.85 and not three[60, 120]
    assert answer["refiner"] == "grabcut" and answer["area"] == int(three.sum()) and answer["ms"] > 0
    # undo: the canvas drops the last prompt; the same prompts give the same mask
    np.testing.assert_array_equal(_mask(_ask(svc, sess, [pos]), sess), one)
    np.testing.assert_array_equal(_mask(_ask(svc, sess, [pos, neg, box]), sess), three)


def test_refine_this_candidate_starts_from_its_mask_and_the_saved_mask_is_the_refined_one(studio) -> None:
    svc, sess, disc, half = studio
    assert iou(half, disc) < 0.6
    refined = _mask(_ask(svc, sess, [{"kind": "point", "x": 62, "y": 60, "label": 1}], prior=half), sess)
    assert iou(refined, disc) > 0.85  # the click in the missed half brings the whole disc
    # the canvas writes the refined instance back into its value; saving stores exactly that mask
    value = canvas_value(sess)
    value["edit"] = {"targets": [{"rle": encode_mask(refined), "candidate": 0, "edited": True,
                                  "prompts": [{"kind": "point", "x": 62, "y": 60, "label": 1}]}], "no_target": False, "ops": 1}
    assert apply_canvas(value, sess)
    msg = annotate.save(svc, "ann", "train", "done", "", "the blue disc", sess, canvas=value).save_msg
    assert msg.startswith("Saved ref")
    stored = svc.store.instances(image_id=sess.image_id)
    assert len(stored) == 1 and (stored[0].mask == refined).all()


def test_prompts_that_cannot_be_used_get_one_line_and_change_nothing(studio) -> None:
    svc, sess, _, _ = studio
    h, w = sess.image.shape[:2]
    outside = _ask(svc, sess, [{"kind": "point", "x": w + 5, "y": 3, "label": 1}])
    assert "outside" in outside["error"] and "\n" not in outside["error"]
    assert "no area" in _ask(svc, sess, [{"kind": "box", "box": [5, 5, 5, 40]}])["error"]
    assert "No prompts" in _ask(svc, sess, [])["error"]
    assert "cannot be used" in _ask(svc, sess, [{"kind": "scribble"}])["error"]
    gone = prompts.refine_on_canvas(svc, {"image": "0" * 64, "w": w, "h": h, "prompts": [{"kind": "point", "x": 1, "y": 1, "label": 1}]})
    assert "no longer open" in gone["error"]
    resized = prompts.refine_on_canvas(svc, {"image": sess.digest, "w": w + 1, "h": h, "prompts": []})
    assert "not the open image" in resized["error"]
    bad_prior = prompts.refine_on_canvas(svc, {"image": sess.digest, "w": w, "h": h, "prior": "zz",
                                               "prompts": [{"kind": "point", "x": 1, "y": 1, "label": 1}]})
    assert "cannot be decoded" in bad_prior["error"]
    assert "no prompts" in prompts.refine_on_canvas(svc, None)["error"]


def test_the_refiner_is_chosen_at_launch_and_falls_back_to_grabcut_in_one_line(tmp_path: Path, caplog) -> None:
    assert RefinerHolder().name == "grabcut"  # the default, built on first use
    with caplog.at_level(logging.WARNING):
        holder = RefinerHolder.from_spec(f"sam:{tmp_path / 'no-such-folder'}")
    assert holder.name == "grabcut"
    lines = [r.getMessage() for r in caplog.records if "GrabCut" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    with pytest.raises(ValueError, match="unknown refiner"):
        RefinerHolder.from_spec("magic")


def test_the_canvas_has_the_prompt_tools_only_with_a_refiner() -> None:
    import gradio as gr

    with gr.Blocks():
        plain = make_canvas("a")
        with_refiner = make_canvas("b", refine=lambda payload: {})
        readonly = make_canvas("c", readonly=True, refine=lambda payload: {})
    names = lambda c: [f.__name__ for f in c.server_fns]  # noqa: E731
    assert "canvas_refine" not in names(plain) and "canvas_refine" not in names(readonly)
    assert "canvas_refine" in names(with_refiner) and "addTool(['c', 'click'" in with_refiner.js_on_load


def test_an_instances_prompts_are_kept_in_the_session_and_sent_back_to_the_canvas(studio) -> None:
    svc, sess, disc, half = studio
    pos = {"kind": "point", "x": 62, "y": 60, "label": 1}
    box = {"kind": "box", "box": [20, 30, 85, 95]}
    refined = _mask(_ask(svc, sess, [pos, box], prior=half), sess)
    value = canvas_value(sess)
    value["edit"] = {"targets": [{"rle": encode_mask(refined), "candidate": 0, "edited": True, "prompts": [pos, box],
                                  "prior": encode_mask(half)}, {"candidate": 1, "edited": False}], "no_target": False, "ops": 1}
    assert apply_canvas(value, sess)
    assert sess.targets[0].prompts == (pos, box) and sess.targets[1].prompts is None
    back = canvas_value(sess)["targets"]  # a re-render from the server (e.g. after a save) gives them back
    assert back[0]["prompts"] == [pos, box] and (decode_mask(back[0]["prior"], *refined.shape) == half).all()
    assert (decode_mask(back[0]["rle"], *refined.shape) == refined).all() and "prompts" not in back[1]
    # the server's undo history keeps them too
    sess.change()
    sess.targets = []
    assert sess.undo() and sess.targets[0].prompts == (pos, box) and sess.targets[0].prior == encode_mask(half)
    # replayed with the prior that came back, the same prompts give the same mask
    np.testing.assert_array_equal(_mask(_ask(svc, sess, back[0]["prompts"], prior=half), sess), refined)


@pytest.mark.parametrize("bad, says", [
    ("not a list", "not a list"),
    ([{"kind": "point", "x": 500, "y": 3, "label": 1}], "outside the 160x120 picture"),
    ([{"kind": "point", "x": float("nan"), "y": 3, "label": 1}], "outside the 160x120 picture"),
    ([{"kind": "box", "box": [0, 0, 10, -4]}], "outside the 160x120 picture"),
    ([{"kind": "box", "box": [0, 0, 10]}], "cannot be used"),
    ([{"kind": "scribble"}], "cannot be used"),
    ([{"kind": "point", "x": 1, "y": 1, "label": 1}] * 201, "at most 200"),
])
def test_malformed_prompts_from_the_canvas_are_refused_with_one_line_and_change_nothing(studio, bad, says) -> None:
    from app.views.canvas import CanvasError

    svc, sess, disc, _ = studio
    before = list(sess.targets)
    value = canvas_value(sess)
    value["edit"] = {"targets": [{"rle": encode_mask(disc), "candidate": None, "edited": True, "prompts": bad}],
                     "no_target": False, "ops": 1}
    with pytest.raises(CanvasError, match=says) as err:
        apply_canvas(value, sess)
    assert "\n" not in str(err.value) and sess.targets == before
    value["edit"]["targets"][0].update(prompts=[{"kind": "point", "x": 1, "y": 1, "label": 1}], prior="zz")
    with pytest.raises(CanvasError, match="cannot be decoded"):
        apply_canvas(value, sess)
