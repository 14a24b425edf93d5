"""Who may do what to a ref: the one permission table of the studio, used by every view, command
line and endpoint (through :mod:`app.services.refs`).

Rules, in the order they apply (the first that speaks decides):

1. Accepting or rejecting needs the reviewer role; nobody accepts a ref whose current content
   they wrote (``RefRecord.editor``) or a ref of their own, nor rejects their own.
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

from dataclasses import dataclass

from ..store import RefRecord
from .errors import Refused

ANNOTATOR, REVIEWER, OPERATOR = "annotator", "reviewer", "operator"
ACTIONS = ("create", "edit", "delete", "accept", "reject", "verify")
STUDIO_ACTIONS = {  # action -> (roles that may, what it is called in a refusal)
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


def why_not(actor: Actor, action: str, ref: RefRecord | None) -> str | None:
    """The reason ``actor`` may not do ``action`` to ``ref`` (None: allowed); see the module docstring."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    if action == "verify":
        if not personal(actor.name):
            return ("A proposed negative is decided by a person, under their name: type your name in the Annotator "
                    "box (or sign in).") if not actor.name else f"{actor.name} is a tool: only a person decides a negative."
        if ref is None:
            return None
        action = "edit"
    if action in ("accept", "reject") and not actor.reviewer:
        return f"{actor.name or 'this user'} is not a reviewer: only reviewers accept or reject refs."
    if action == "create" or ref is None:
        return None
    if action in ("accept", "reject"):
        if action == "accept" and actor.name and ref.editor == actor.name:  # nameless: nobody to tell apart
            return (f"You wrote the current content of ref {ref.id}, so you cannot accept it: save it as done "
                    "and another reviewer accepts it.")
        if personal(ref.annotator) and ref.annotator == actor.name:
            return "You cannot review your own ref: another reviewer decides on it."
        return None
    verb = "change" if action == "edit" else "delete"
    if ref.status == "reviewed" and not actor.reviewer:
        return f"ref {ref.id} was accepted; only a reviewer can {verb} it now."
    if not personal(ref.annotator) or not actor.accounts or ref.annotator == actor.name or actor.reviewer:
        return None
    if action == "delete":
        return f"Only {ref.annotator} or a reviewer can delete ref {ref.id}."
    return f"ref {ref.id} was made by {ref.annotator}; only {ref.annotator} or a reviewer can change it."


def can(actor: Actor, action: str, ref: RefRecord | None) -> bool:
    """Whether ``actor`` may ``action`` (create, edit, delete, accept, reject, verify) ``ref``."""
    return why_not(actor, action, ref) is None


def require(actor: Actor, action: str, ref: RefRecord | None) -> None:
    """Raise :class:`Refused` with the table's reason unless the action is allowed."""
    why = why_not(actor, action, ref)
    if why is not None:
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
