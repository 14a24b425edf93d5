"""Who may do what to a ref: the one permission table of the studio (:data:`RULES`, rows of role x
action x condition -> allow / refuse / decide as an edit), used by every view, command line and
endpoint (through :mod:`app.services.refs`). ``tests/test_permissions.py`` runs one example per row.
To add a rule, add a row (and, for a new role or condition, its entry in :data:`ROLES` /
:data:`CONDITIONS`) before the rows it should take precedence over.

The rules in words, in the order they apply (the first that speaks decides):

1. Accepting or rejecting needs the reviewer role; nobody accepts a ref whose current content
   they wrote (``RefRecord.editor``, and along the content's provenance: :func:`wrote_content`) or a
   ref of their own, nor rejects their own.
2. An accepted ref (status ``reviewed``) is changed or deleted by reviewers only, whoever made it
   (also a ``consensus(...)``, imported, model-made or pre-sign-in ref).
3. A ref without a personal author (none, ``model:...``, ``consensus(...)``) is free to take.
4. Without accounts (no ``--auth``) everyone may change every other ref; with accounts, only
   its author or a reviewer.

Deciding a proposed negative (``verify``: "refers to nothing here" or "it does") is a person's act,
recorded under their name: a batch tool or a nameless user is refused; when the negative already
has a ref (the model's predicted one, or an earlier decision's), it is an edit of that ref (rules 2-4).

Batch tools act as :meth:`Actor.tool` (no reviewer role): they create and re-threshold, never accept.

Acts on the whole studio rather than on one ref (:func:`why_not_studio`), with accounts:

============================  ==========================================================
action                        who may (roles named in ``--auth``; ``operator`` is given
                              explicitly, an entry without roles is annotator+reviewer)
============================  ==========================================================
``switch_model``              reviewer or operator (the Model panel: for everyone at once)
``run_jobs``                  reviewer or operator (the Jobs panel: pre-annotation,
                              hard negatives, fine-tune)
``import_folder``             operator (add a folder of the server, only under an
                              ``--import-root``)
``add_images`` (uploads)      anyone signed in
============================  ==========================================================

Without accounts (no ``--auth``) everyone may do all of these: the operator who launched an open
studio chose its flags (``--allow-weights``, ``--import-root``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from ..store import RefRecord, RefStatus
from .errors import Refused

log = logging.getLogger(__name__)

ANNOTATOR, REVIEWER, OPERATOR = "annotator", "reviewer", "operator"
# Studio-wide actions (no ref involved): action -> (roles that may, what it is called in a refusal)
STUDIO_ACTIONS = {
    "switch_model": ((REVIEWER, OPERATOR), "switch the shared model"),
    "run_jobs": ((REVIEWER, OPERATOR), "start or cancel jobs"),
    "import_folder": ((OPERATOR,), "import a folder of the server"),
    "add_images": ((ANNOTATOR, REVIEWER, OPERATOR), "add images"),
}


@dataclass(frozen=True)
class Actor:
    """Who acts: a name, roles, and whether the studio has accounts (then a person's refs are theirs)."""

    name: str
    roles: frozenset[str] = frozenset((ANNOTATOR, REVIEWER))
    accounts: bool = False

    @property
    def reviewer(self) -> bool:
        return REVIEWER in self.roles

    @classmethod
    def tool(cls, name: str) -> "Actor":
        """A batch job (pre-annotation, consensus, a benchmark): may create and edit, never review."""
        return cls(name, frozenset((ANNOTATOR,)))


def personal(author: str | None) -> bool:
    """A ref made by a person (not by the model, by consensus, or by nobody recorded)."""
    return bool(author) and not str(author).startswith(("model:", "consensus"))


# --- the table ------------------------------------------------------------------------------------

ALLOW, REFUSE, AS_EDIT = "allow", "refuse", "as edit"  # a row's decision (AS_EDIT: decide it as an edit of the ref)

# who acts: the column "role" of the table
ROLES: dict[str, Callable[[Actor], bool]] = {
    "anyone": lambda a: True,
    "reviewer": lambda a: a.reviewer,
    "non-reviewer": lambda a: not a.reviewer,
    "nameless": lambda a: not a.name,
    "tool": lambda a: bool(a.name) and not personal(a.name),  # model:..., consensus(...): not a person
    "open studio": lambda a: not a.accounts,  # no --auth: typed names, no ownership
}

# what holds of the ref (and its relation to the actor): the column "when"
CONDITIONS: dict[str, Callable[[Actor, "RefRecord | None"], bool]] = {
    "always": lambda a, r: True,
    "no ref": lambda a, r: r is None,
    "wrote its content": lambda a, r: r is not None and bool(a.name) and r.editor == a.name,  # nameless: nobody to tell apart
    "own ref": lambda a, r: r is not None and personal(r.author) and r.author == a.name,
    "accepted": lambda a, r: r is not None and r.status == RefStatus.REVIEWED,
    "no personal author": lambda a, r: r is not None and not personal(r.author),
}


@dataclass(frozen=True)
class Rule:
    """One row: for ``actions``, an actor of ``role`` on a ref where ``when`` holds gets ``decision``;
    ``why`` is the refusal shown (``{who}``, ``{id}``, ``{author}``, ``{verb}`` filled in)."""

    actions: tuple[str, ...]
    role: str
    when: str
    decision: str
    why: str = ""


_REVIEW, _CHANGE = ("accept", "reject"), ("edit", "delete")

# The first row that matches decides; the last rows of each action match everything.
RULES: tuple[Rule, ...] = (
    Rule(("verify",), "nameless", "always", REFUSE, "A proposed negative is decided by a person, under their name: "
         "type your name in the Annotator box (or sign in)."),
    Rule(("verify",), "tool", "always", REFUSE, "{who} is a tool: only a person decides a negative."),
    Rule(("verify",), "anyone", "no ref", ALLOW),
    Rule(("verify",), "anyone", "always", AS_EDIT),  # the negative's ref (the model's, or an earlier decision's)
    Rule(_REVIEW, "non-reviewer", "always", REFUSE, "{who} is not a reviewer: only reviewers accept or reject refs."),
    Rule(("create",), "anyone", "always", ALLOW),
    Rule(_CHANGE, "anyone", "no ref", ALLOW),
    Rule(_REVIEW, "reviewer", "no ref", ALLOW),  # the role alone (a save that accepts checks the ref after writing it)
    Rule(("accept",), "reviewer", "wrote its content", REFUSE, "You wrote the current content of ref {id}, so you "
         "cannot accept it: save it as done and another reviewer accepts it."),
    Rule(_REVIEW, "reviewer", "own ref", REFUSE, "You cannot review your own ref: another reviewer decides on it."),
    Rule(_REVIEW, "reviewer", "always", ALLOW),
    Rule(_CHANGE, "non-reviewer", "accepted", REFUSE, "ref {id} was accepted; only a reviewer can {verb} it now."),
    Rule(_CHANGE, "anyone", "no personal author", ALLOW),
    Rule(_CHANGE, "open studio", "always", ALLOW),
    Rule(_CHANGE, "anyone", "own ref", ALLOW),
    Rule(_CHANGE, "reviewer", "always", ALLOW),
    Rule(("delete",), "anyone", "always", REFUSE, "Only {author} or a reviewer can delete ref {id}."),
    Rule(("edit",), "anyone", "always", REFUSE, "ref {id} was made by {author}; only {author} or a reviewer can change it."),
)
ACTIONS = ("create", "edit", "delete", "accept", "reject", "verify")


def deciding_rule(actor: Actor, action: str, ref: RefRecord | None) -> tuple[Rule, str]:
    """The row of :data:`RULES` that decides, and the action it was decided as (``verify`` of a
    negative that has a ref is decided as an ``edit`` of it)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    for rule in RULES:
        if action in rule.actions and ROLES[rule.role](actor) and CONDITIONS[rule.when](actor, ref):
            return deciding_rule(actor, "edit", ref) if rule.decision == AS_EDIT else (rule, action)
    raise AssertionError(f"the permission table has no row for {action}")  # every action ends with a catch-all


def why_not(actor: Actor, action: str, ref: RefRecord | None) -> str | None:
    """The reason ``actor`` may not do ``action`` to ``ref`` (None: allowed), from :data:`RULES`."""
    rule, as_action = deciding_rule(actor, action, ref)
    if rule.decision == ALLOW:
        return None
    return rule.why.format(who=actor.name or "this user", id=ref.id if ref is not None else "",
                           author=ref.author if ref is not None else "",
                           verb="change" if as_action == "edit" else as_action)


def wrote_content(actor: Actor, ref: RefRecord, authors: set[str]) -> str | None:
    """Rule 1 along the content's provenance: the reason ``actor`` may not accept ``ref`` when they are
    among ``authors``, the people who wrote its content (``app.store.provenance.content_authors``: also
    through a consensus copy, an import or a migration); None otherwise."""
    if not actor.name or actor.name not in authors:
        return None
    return (f"You wrote the content of ref {ref.id} (it reached ref {ref.id} through "
            f"{'agreement' if str(ref.author).startswith('consensus') else 'a copy'}), so you cannot accept it: "
            "another reviewer decides on it.")


def can(actor: Actor, action: str, ref: RefRecord | None) -> bool:
    """Whether ``actor`` may ``action`` (create, edit, delete, accept, reject, verify) ``ref``."""
    return why_not(actor, action, ref) is None


def require(actor: Actor, action: str, ref: RefRecord | None) -> None:
    """Raise :class:`Refused` with the table's reason unless the action is allowed."""
    why = why_not(actor, action, ref)
    if why is not None:
        log.info("refused: %s may not %s ref %s: %s", actor.name or "-", action, ref.id if ref else "(new)", why)
        raise Refused(why)


def why_not_studio(actor: Actor, action: str) -> str | None:
    """The reason ``actor`` may not do a studio-wide ``action`` (see the table above); None: allowed."""
    if action not in STUDIO_ACTIONS:
        raise ValueError(f"unknown studio action {action!r}")
    roles, what = STUDIO_ACTIONS[action]
    if not actor.accounts or set(roles) & set(actor.roles):
        return None
    return f"Only {' or '.join(r + 's' for r in roles)} may {what}; {actor.name or 'this user'} is not one."


def require_studio(actor: Actor, action: str) -> None:
    """Raise :class:`Refused` unless ``actor`` may do the studio-wide ``action``."""
    why = why_not_studio(actor, action)
    if why is not None:
        raise Refused(why)
