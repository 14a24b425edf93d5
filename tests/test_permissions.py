"""The one permission table (app/services/permissions.py) and the ref operations that use it
(app/services/refs.py): accepted refs are reviewers' only, whoever made them, and nobody accepts a
ref whose current content they wrote, by any path (save with status reviewed, review, batch tools)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.services import Actor, RefService, Refused, can
from app.services.permissions import why_not
from app.store import RefRecord, Store

ANN = Actor("ann", frozenset({"annotator"}), accounts=True)
BOB = Actor("bob", frozenset({"annotator"}), accounts=True)
REV = Actor("rev", frozenset({"annotator", "reviewer"}), accounts=True)  # the default roles of an --auth entry
BOSS = Actor("boss", frozenset({"annotator", "reviewer"}), accounts=True)


def _ref(annotator: str, status: str = "done", editor: str | None = None) -> RefRecord:
    return RefRecord(1, 1, ["x"], [], True, "train", annotator, status, 0.0, 0.0, [], 1,
                     annotator if editor is None else editor)


@pytest.mark.parametrize("author", ["consensus(ann,bob)", "", "model:bundled", "bob"])
def test_accepted_refs_are_reviewers_only_whoever_made_them(author: str) -> None:
    accepted = _ref(author, "reviewed")
    for action in ("edit", "delete"):
        assert "only a reviewer" in why_not(ANN, action, accepted)
        assert can(REV, action, accepted)
    if author != "bob":  # a ref without a personal author is free to take while it is not accepted
        assert can(ANN, "edit", _ref(author)) and can(ANN, "delete", _ref(author))


def test_a_persons_ref_is_theirs_with_accounts_and_everyones_without() -> None:
    bobs = _ref("bob")
    assert can(BOB, "edit", bobs) and can(REV, "edit", bobs)
    assert "only bob or a reviewer can change it" in why_not(ANN, "edit", bobs)
    assert why_not(ANN, "delete", bobs).startswith("Only bob or a reviewer can delete")
    assert can(Actor("ann"), "edit", bobs)  # an open studio (no --auth): typed names, no ownership


def test_nobody_accepts_what_they_wrote() -> None:
    assert "not a reviewer" in why_not(ANN, "accept", _ref("bob"))
    assert "cannot accept it" in why_not(REV, "accept", _ref("rev"))  # their own ref
    assert "cannot accept it" in why_not(REV, "accept", _ref("bob", editor="rev"))  # bob's ref, rev's content
    assert "cannot accept it" in why_not(REV, "accept", _ref("consensus(a,b)", editor="rev"))
    assert can(REV, "accept", _ref("bob", editor="boss")) and can(BOSS, "accept", _ref("bob", editor="rev"))
    assert "your own ref" in why_not(REV, "reject", _ref("rev"))
    assert not can(Actor.tool("agreement"), "accept", _ref("bob"))  # batch tools never review
    # an open studio (no accounts) with an empty name box: nobody to tell apart, so no self-review refusal
    assert can(Actor("", frozenset({"annotator", "reviewer"})), "accept", _ref("", editor=""))


def _store(db_at) -> tuple[Store, int]:
    s = Store(db_at("p.sqlite"))
    return s, s.add_image(np.zeros((20, 20, 3), np.uint8))


def _mask(x: int = 2) -> np.ndarray:
    m = np.zeros((20, 20), bool)
    m[2:9, x:x + 8] = True
    return m


def test_saving_ones_own_work_as_reviewed_is_refused_and_writes_nothing(db_at, tmp_path: Path) -> None:
    s, img = _store(db_at)
    refs = RefService(s)
    with pytest.raises(Refused, match="cannot accept it"):  # a new ref, straight to reviewed
        refs.save(REV, img, ["the box"], masks=[_mask()], status="reviewed")
    assert s.stats()["refs"] == 0 and s.instances() == []
    own = refs.save(REV, img, ["the box"], masks=[_mask()])  # awaiting review ...
    with pytest.raises(Refused, match="cannot accept it"):  # ... then saved again as reviewed
        refs.save(REV, img, ["the box"], masks=[_mask()], status="reviewed", ref_id=own.ref_id,
                  expected_version=own.version)
    assert s.ref(own.ref_id).status == "done" and s.ref(own.ref_id).version == own.version


def test_rewriting_someone_elses_ref_then_accepting_it_is_refused(db_at, tmp_path: Path) -> None:
    s, img = _store(db_at)
    refs = RefService(s)
    bobs = refs.save(BOB, img, ["the box"], masks=[_mask()])
    edited = refs.save(REV, img, ["the box", "a square"], masks=[_mask(4)], ref_id=bobs.ref_id,
                       expected_version=bobs.version)
    rec = s.ref(bobs.ref_id)
    assert rec.author == "bob" and rec.editor == "rev"  # the author stays, the content is rev's
    with pytest.raises(Refused, match="cannot accept it"):
        refs.review(REV, rec.id, "accept", expected_version=edited.version)
    with pytest.raises(Refused, match="cannot accept it"):  # nor by saving it as reviewed
        refs.save(REV, img, ["the box", "a square"], masks=[_mask(4)], status="reviewed", ref_id=rec.id,
                  expected_version=edited.version)
    # a change of split only is not new content: boss, who wrote none of it, may accept through the save
    accepted = refs.save(BOSS, img, ["the box", "a square"], masks=[_mask(4)], split="val", status="reviewed",
                         ref_id=rec.id, expected_version=edited.version)
    rec = s.ref(rec.id)
    assert rec.status == "reviewed" and rec.editor == "rev" and rec.version == accepted.version
    last = s.events(rec.id)[-1]
    assert last.action == "review" and last.actor == "boss" and last.detail["decision"] == "accept"


def test_accepted_consensus_and_imported_refs_resist_annotators(db_at, tmp_path: Path) -> None:
    s, img = _store(db_at)
    refs = RefService(s)
    tool = Actor.tool("agreement")
    for author in ("consensus(ann,bob)", ""):
        made = refs.save(tool, img, [f"made by {author or 'nobody'}"], no_target=True, author=author)
        refs.review(REV, made.ref_id, "accept", expected_version=made.version)
        rec = s.ref(made.ref_id)
        with pytest.raises(Refused, match="only a reviewer can change it"):
            refs.save(ANN, img, ["mine now"], masks=[_mask()], ref_id=rec.id, expected_version=rec.version)
        with pytest.raises(Refused, match="only a reviewer can delete it"):
            refs.delete(ANN, rec.id)
        assert s.ref(rec.id).author == author and s.ref(rec.id).status == "reviewed"


# --- the table, row by row (as CVAT's rule tests do: one generated case per row) --------------------

from app.services.permissions import ACTIONS, ALLOW, AS_EDIT, CONDITIONS, ROLES, RULES, deciding_rule  # noqa: E402

# an actor of each role of the table (chosen here, apart from the table, so that a row that earlier rows
# shadow fails its case) ...
ROLE_EXAMPLES = {
    "anyone": ANN,  # signed in, annotator only
    "reviewer": REV,
    "non-reviewer": ANN,
    "nameless": Actor(""),
    "tool": Actor.tool("model:bundled"),
    "open studio": Actor("ann", frozenset({"annotator"})),  # no --auth
}


# ... and a ref where each condition holds for that actor
def _example_ref(when: str, actor: Actor) -> RefRecord | None:
    return {
        "always": lambda: _ref("bob"),
        "no ref": lambda: None,
        "wrote its content": lambda: _ref("bob", editor=actor.name),
        "own ref": lambda: _ref(actor.name, editor="boss"),
        "accepted": lambda: _ref("bob", "reviewed"),
        "no personal author": lambda: _ref("model:bundled"),
    }[when]()


CASES = [pytest.param(n, rule, action, id=f"{n}-{action}-{rule.role}-{rule.when}")
         for n, rule in enumerate(RULES) for action in rule.actions]


@pytest.mark.parametrize(("n", "rule", "action"), CASES)
def test_every_row_of_the_table_decides_its_own_case(n: int, rule, action: str) -> None:
    actor = ROLE_EXAMPLES[rule.role]
    ref = _example_ref(rule.when, actor)
    assert ROLES[rule.role](actor) and CONDITIONS[rule.when](actor, ref)  # the example is one the row speaks of
    decided, _ = deciding_rule(actor, action, ref)
    if rule.decision == AS_EDIT:
        assert decided == deciding_rule(actor, "edit", ref)[0]
        return
    assert decided is rule, f"row {n} is shadowed by row {RULES.index(decided)}"
    why = why_not(actor, action, ref)
    assert (why is None) == (rule.decision == ALLOW)
    if why is not None:
        assert "{" not in why  # every placeholder filled in
        assert why == rule.why.format(who=actor.name or "this user", id=ref.id if ref else "",
                                      author=ref.author if ref else "", verb="change" if action == "edit" else action)


def test_every_role_condition_and_action_of_the_table_is_known_and_nothing_falls_through() -> None:
    assert set(ROLE_EXAMPLES) == set(ROLES)
    for rule in RULES:
        assert rule.role in ROLES and rule.when in CONDITIONS and set(rule.actions) <= set(ACTIONS)
        assert rule.decision == ALLOW or rule.decision == AS_EDIT or rule.why
    for action in ACTIONS:  # every action is decided for every example actor and ref (no gap in the table)
        for actor in ROLE_EXAMPLES.values():
            for when in CONDITIONS:
                deciding_rule(actor, action, _example_ref(when, actor))
    with pytest.raises(ValueError):
        why_not(ANN, "approve", None)
