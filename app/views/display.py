"""What the views show, as pure functions of the session and the store's rows (no Gradio).

Target numbering: a target that came from a candidate shows the candidate's row number in the
list (best first), so the badge on the picture and the row agree; drawn targets show ``✎1``,
``✎2`` … Colours follow the same numbers.
"""

from __future__ import annotations

import html
import time
import numpy as np

from ..viewkit import overlay
from ..viewkit.session import Session
from ..services import REASONS, Event, RefRow

DRAWN = "D"


def target_numbers(sess: Session) -> list[tuple[str, int]]:
    """``(badge text, colour rank)`` per target: the candidate's row number, or ✎n for drawn masks."""
    rank = {k: r for r, k in enumerate(sess.prediction.order)} if sess.prediction is not None else {}
    out, drawn = [], 0
    for t in sess.targets:
        if t.candidate is not None and t.candidate in rank:
            out.append((str(rank[t.candidate] + 1), rank[t.candidate]))
        else:
            drawn += 1
            out.append((f"{DRAWN}{drawn}", 11 - drawn % 6))
    return out


def picture(sess: Session) -> np.ndarray | None:
    """The annotate view's image: numbered targets, or the NO TARGET frame."""
    if sess.image is None:
        return None
    nums = target_numbers(sess)
    return overlay.render(sess.image, [t.mask for t in sess.targets], [n for n, _ in nums],
                                  [r for _, r in nums], no_target=sess.no_target)


def verdict_html(sess: Session) -> str:
    if sess.image is None:
        return ("<div class='verdict-none' id='verdict'>Open an image of the collection (D; an empty collection: add "
                "images under <i>Add images</i> above), or upload, paste or pick an example under <i>Add an image</i>; "
                "then type an expression and press Enter.</div>")
    p = sess.prediction
    ex = f" &middot; existence probability {p.existence:.2f}" if p is not None else ""
    note = (f"<div class='verdict-domain' id='verdict-domain'>{html.escape(sess.domain_note)}</div>"
            if p is not None and getattr(sess, "domain_note", "") else "")
    if sess.no_target:
        if p is not None and p.existence >= 0.5:  # words and colour follow the decision, and say the doubt
            return (f"<div class='verdict-warn' id='verdict'>NO TARGET marked &mdash; but the model's existence "
                    f"probability is {p.existence:.2f}: it thinks something is referred; check</div>{note}")
        return f"<div class='verdict-nt' id='verdict'>NO TARGET &mdash; the expression refers to nothing{ex}</div>{note}"
    if not sess.targets:
        hint = " &middot; click an object to add it" if p is not None else ""
        return f"<div class='verdict-none' id='verdict'>No instance selected yet{ex}{hint}</div>{note}"
    n = len(sess.targets)
    what = f"{n} target instance{'s' if n > 1 else ''}"
    if p is not None and p.existence < 0.5:  # targets shown, but the model leans to "nothing": not green
        return (f"<div class='verdict-warn' id='verdict'>{what} shown &mdash; but the existence probability is only "
                f"{p.existence:.2f}: the model leans to <b>no target</b>; check before saving</div>{note}")
    if note:  # the model is out of its domain: its confidence is no reason for green
        return (f"<div class='verdict-warn' id='verdict'>{what}{ex} &mdash; on a picture unlike the model's own: "
                f"check each target</div>{note}")
    return f"<div class='verdict-t' id='verdict'>{what}{ex}</div>{note}"


def candidate_choices(sess: Session) -> list[tuple[str, int]]:
    """Candidate rows, best first: "candidate N" (its rank), score, and a tick when above the score
    threshold (the model's query index is an internal number: never shown)."""
    p = sess.prediction
    if p is None:
        return []
    out = []
    for rank, k in enumerate(p.order):
        mark = " ✓" if p.scores[k] > p.score_threshold else ""
        out.append((f"candidate {rank + 1} · score {p.scores[k]:.3f}{mark}", int(k)))
    return out


def candidate_gallery(sess: Session) -> list[tuple[np.ndarray, str]]:
    """One small picture per candidate, best first (masks from the network's 384x384 output,
    never resized through the full image size)."""
    if sess.prediction is None or sess.image is None:
        return []
    return overlay.candidate_gallery(sess.image, sess.prediction)


def target_choices(sess: Session) -> list[tuple[str, int]]:
    out = []
    for i, ((num, _), t) in enumerate(zip(target_numbers(sess), sess.targets)):
        src = f"candidate {num}" if t.candidate is not None else "drawn"
        out.append((f"instance {num} ({src}{', edited' if t.edited else ''}, {int(t.mask.sum())} px)", i))
    return out


def ref_rows(rows: list[RefRow], with_image: bool = True) -> list[list]:
    out = []
    for r in rows:
        targets = "no target" if r.no_target else str(r.targets)
        row = [r.id, r.sentences, targets, r.status, r.author or "", time.strftime("%m-%d %H:%M", time.localtime(r.updated_at))]
        if with_image:
            row[1:1] = [f"{r.image_id} {r.file_name}"]
            row.insert(5, r.split)
        out.append(row)
    return out


def _bar(part: int, whole: int) -> str:
    pct = 100.0 * part / whole if whole else 0.0
    return (f"<div class='pbar'><div style='width:{pct:.1f}%'></div></div>"
            f"<span class='pnum'>{part:,} / {whole:,} ({pct:.0f}%)</span>")


def progress_html(p: dict, people: list[dict] | None = None) -> str:
    """Progress at a glance: images done, refs by status, shares, and one row per person
    (refs made, decisions on them, acceptance rate, reviews given)."""
    st = p["by_status"]
    chips = " ".join(f"<span class='chip chip-{html.escape(k)}'>{html.escape(k)} {v:,}</span>" for k, v in sorted(st.items()))
    by_name = {a["annotator"]: a for a in p["annotators"]}
    rows = []
    for person in people if people is not None else [{"person": a["annotator"]} for a in p["annotators"]]:
        a = by_name.get(person["person"], {})
        rate = person.get("acceptance_rate")
        rows.append(f"<tr><td>{html.escape(person['person'])}</td><td>{a.get('refs', 0):,}</td><td>{a.get('images', 0):,}</td>"
                    f"<td>{a.get('no_target', 0):,}</td><td>{person.get('accepted', 0):,}</td><td>{person.get('rejected', 0):,}</td>"
                    f"<td>{'—' if rate is None else f'{100 * rate:.0f}%'}</td><td>{person.get('reviews_given', 0):,}</td></tr>")
    table = ("<table class='ptable'><tr><th>person</th><th>refs made</th><th>images</th><th>no target</th>"
             "<th>accepted</th><th>rejected</th><th>acceptance</th><th>reviews given</th></tr>"
             f"{''.join(rows)}</table>") if rows else ""
    return (f"<div id='progress-box'><div class='prow'><b>Images done</b> {_bar(p['images_done'], p['images'])}</div>"
            f"<div class='prow'><b>Images with refs</b> {_bar(p['images_with_refs'], p['images'])}</div>"
            f"<div class='prow'><b>{p['refs']:,} refs</b> {chips or '—'} &middot; no target "
            f"{100 * p['no_target_share']:.0f}% &middot; several targets {100 * p['multi_target_share']:.0f}%</div>"
            f"{table}</div>")


def queue_html(index: int | None, total: int, file_name: str = "") -> str:
    if index is None or total == 0:
        return f"<div id='queue-pos' class='queue-pos'>No collection image open &middot; {total:,} in the queue</div>"
    name = html.escape(file_name, quote=True)  # a long name is cut on screen (CSS): whole in the title
    return (f"<div id='queue-pos' class='queue-pos' title='{name}'>Image <b>{index + 1:,} / {total:,}</b> &middot; "
            f"{name}</div>")


PAST = {"create": "created", "edit": "edited"}


def history_html(events: list[Event]) -> str:
    """A ref's history as a list (who, when, what)."""
    items = []
    for e in events:
        d = e.detail
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.at))
        who = html.escape(e.actor or "(anonymous)")
        if e.action == "review":
            what = "accepted" if d.get("decision") == "accept" else \
                f"rejected: {html.escape(REASONS.get(d.get('reason') or '', d.get('reason') or ''))}"
            if d.get("comment"):
                what += f" — “{html.escape(d['comment'])}”"
        elif e.action == "status":
            what = f"status {html.escape(str(d.get('from')))} → {html.escape(str(d.get('to')))}"
        elif e.action in ("create", "edit"):
            n = "no target" if d.get("no_target") else f"{len(d.get('targets', []))} target(s)"
            what = f"{PAST[e.action]}: “{html.escape(' | '.join(d.get('sentences', [])))}”, {n}, {html.escape(str(d.get('status')))}"
        else:
            what = html.escape(e.action)
        items.append(f"<li><span class='when'>{when}</span> <b>{who}</b> {what}</li>")
    return f"<ul class='history' id='history-list'>{''.join(items)}</ul>" if items else "<i>No history recorded.</i>"


def reopened_note(opened) -> str:
    """The Annotate view's note on a reopened ref (:class:`~app.services.workspace.Reopened`): that
    saving updates it, or, for a rejected one, who rejected it and why (Markdown)."""
    d = opened.rejection
    if d is None:
        return f"Editing ref {opened.ref_id}: saving updates it; Alt+N starts a new ref."
    return (f"**Rejected by {d.reviewer}**: {REASONS.get(d.reason or '', d.reason or '')}"
            f"{' — “' + d.comment + '”' if d.comment else ''}. Fix it and save: it goes back to *done*.")
