"""The open image of a session: opening a collection image, an upload or a saved ref, and running
an expression on it (the image's features are computed once per model and image).

What every view shares about the image being worked on goes through here, so that reopening a ref
from the Dataset tab, the Annotate tab's ref list or the "fix these first" list is one operation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from deris_core.preprocess import ImageError, load_image
from deris_core.tokenizer import TokenizerError

from ..viewkit.session import Session, Target
from ..store import RefAction, RefRecord, RefStatus, Store, StoreError, image_digest, next_status
from ..store.review import Decision
from .errors import BadInput
from .model import ModelHolder
from .speculate import Ask, Speculator, normalised


def fit(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, bool]:
    """The image scaled down to ``max_side`` (area interpolation) and whether it was."""
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb, False
    s = max_side / max(h, w)
    return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA), True


def upload_source(path: str) -> str:
    """Identity of an uploaded image: its bytes (Gradio may hand the same picture under new paths)."""
    try:
        return hashlib.sha1(Path(path).read_bytes()).hexdigest()
    except OSError:
        return path


@dataclass
class Opened:
    """A session for an image, and what the user should be told about it (None: nothing)."""

    session: Session
    warning: str | None = None


@dataclass
class Reopened:
    """A saved ref opened for editing: the session, what the boxes show, and the last rejection (the
    view tells the author who rejected it and why)."""

    session: Session
    sentences: list[str]
    split: str
    status: str  # what the status box shows: a rejected or predicted ref is saved as done
    ref_id: int
    rejection: Decision | None = None


class Workspace:
    """Opening images and refs into sessions, over the shared model and the store."""

    def __init__(self, model: ModelHolder, store: Store, max_image_side: int = 4096,
                 speculation: Speculator | None = None) -> None:
        self.model, self.store, self.max_image_side = model, store, max_image_side
        self.speculation = speculation  # the expression run while typing (None: every Enter runs the model)

    def _session(self, rgb: np.ndarray, image_id: int | None, source: str, digest: str | None = None) -> Session:
        return Session(image=rgb, image_state=self.model.features(source, rgb), image_id=image_id,
                       features_key=self.model.features_key(source), digest=digest or image_digest(rgb))

    def open_upload(self, path: str, sess: Session) -> Opened:
        """An uploaded file as the open image (the same picture again keeps its features)."""
        key = self.model.features_key(upload_source(path))
        if sess.image is not None and sess.features_key == key and sess.image_state is not None:
            return Opened(sess)
        try:
            rgb = load_image(path)
        except ImageError as exc:
            raise BadInput(f"Cannot use this image: {str(exc).replace(str(path), Path(path).name)}") from None
        rgb, resized = fit(rgb, self.max_image_side)
        digest = image_digest(rgb)
        if sess.image_state is not None and sess.digest == digest and self.model.is_current(sess.features_key):
            sess.features_key = key  # the same pixels under another file: keep the cached features
            return Opened(sess)
        warning = (f"The image was scaled down to {rgb.shape[1]}x{rgb.shape[0]} (--max-image-side "
                   f"{self.max_image_side}).") if resized else None
        return Opened(self._session(rgb, None, key.split(":", 1)[1], digest), warning)

    def open_image(self, image_id: int) -> Session:
        """A collection image as the open image (its features prefetched or cached: neither decoded
        nor encoded again)."""
        state = self.model.cached(f"store:{image_id}")
        if state is not None:
            return Session(image=state.image, image_state=state, image_id=image_id,
                           features_key=self.model.features_key(f"store:{image_id}"), digest=image_digest(state.image))
        rgb = self.store.load_image(image_id)
        if rgb is None:
            raise BadInput(f"The pixels of image {image_id} are not available (imported by reference, file missing).")
        if max(rgb.shape[:2]) > self.max_image_side:
            raise BadInput(f"Image {image_id} is larger than --max-image-side {self.max_image_side}.")
        return self._session(rgb, image_id, f"store:{image_id}")

    def ensure_features(self, sess: Session) -> None:
        """Recompute the open image's features when the model changed since they were made."""
        if sess.image is not None and (sess.image_state is None or not self.model.is_current(sess.features_key)):
            sess.image_state = self.model.encode(sess.image)
            sess.features_key = self.model.features_key(sess.digest or image_digest(sess.image))

    def _ask(self, sess: Session, text: str, score_threshold: float, mask_threshold: float) -> Ask | None:
        """What a run of ``text`` on the open image is kept under (None: no current features to run it on)."""
        if sess.image_state is None or not self.model.is_current(sess.features_key):
            return None
        return Ask.of(sess.features_key, text, score_threshold, mask_threshold)

    def speculate(self, sess: Session, text: str, score_threshold: float, mask_threshold: float,
                  client: str | None) -> bool:
        """The expression box's text has been still for a moment: predict it on the open image in the
        background, so that Enter finds it done (:mod:`.speculate`). False: nothing was started."""
        ask = self._ask(sess, text, score_threshold, mask_threshold)
        if self.speculation is None or ask is None:
            return False
        return self.speculation.schedule(client, ask, sess.image_state)

    def left_image(self, client: str | None) -> None:
        """The session opened another image (or left): its run while typing is no longer wanted."""
        if self.speculation is not None:
            self.speculation.cancel(client)

    def predict(self, sess: Session, text: str, score_threshold: float, mask_threshold: float,
                client: str | None = None) -> str | None:
        """Run ``text`` on the open image; the referred candidates become the target set. The run made
        while the annotator typed (``client``'s, or any session's of the same ask) is used when there is
        one. Returns a warning for the user (a truncated expression) or None."""
        text = normalised(text)
        if not text:
            raise BadInput("Type an expression first.")
        predictor = self.model.get()
        ask = self._ask(sess, text, score_threshold, mask_threshold) if self.speculation is not None else None
        pred = self.speculation.take(client, ask) if ask is not None else None
        # interactive, also when the run made while typing answers: the target masks are made here, and a
        # prefetch's encoder block beside them would double their time on a small CPU
        with self.model.priority.interactive():
            if pred is None:
                try:
                    pred = predictor.predict(text, image=sess.image_state, score_threshold=score_threshold,
                                             mask_threshold=mask_threshold)
                except TokenizerError as exc:
                    raise BadInput(f"Cannot use this expression: {exc}") from None
                if ask is not None:
                    self.speculation.keep(ask, pred)
            sess.apply_prediction(pred)
        sess.expression = text
        sess.domain_note = self._domain_note(sess)
        if pred.truncated:
            return f"The expression is long: only its first {predictor.cfg.max_token - 2} tokens were used."
        return None

    def _domain_note(self, sess: Session) -> str:
        """The out-of-domain warning for the open picture, computed once per picture and model."""
        from ..viewkit.model_info import is_bundled
        from .scene_domain import out_of_domain_note

        key = f"{self.model.version}:{sess.digest or id(sess.image)}"
        if getattr(sess, "_domain_key", None) != key:
            sess._domain_key = key  # type: ignore[attr-defined]
            sess._domain_cached = out_of_domain_note(sess.image, is_bundled(self.model.predictor))  # type: ignore[attr-defined]
        return sess._domain_cached  # type: ignore[attr-defined]

    def reopen(self, ref_id: int, sess: Session, last_decision=None) -> Reopened:
        """A saved ref as the session being edited: its image (features once), sentences, targets, version."""
        try:
            rec = self.store.ref(int(ref_id))
        except StoreError as exc:
            raise BadInput(str(exc)) from None
        if sess.image_id == rec.image_id and sess.image_state is not None and self.model.is_current(sess.features_key):
            rgb, state = sess.image, sess.image_state
        else:
            rgb = self.store.load_image(rec.image_id)
            if rgb is None:
                raise BadInput(f"The pixels of image {rec.image_id} are not available (imported by reference).")
            state = self.model.features(f"store:{rec.image_id}", rgb)
        masks = {i.id: i.mask for i in self.store.instances(rec.image_id)}
        new = Session(image=rgb, image_state=state, image_id=rec.image_id,
                      features_key=self.model.features_key(f"store:{rec.image_id}"), digest=image_digest(rgb),
                      expression=rec.sentences[0], ref_id=rec.id, ref_version=rec.version, editing=True,
                      fixing=rec.status == RefStatus.REJECTED,
                      no_target=rec.no_target, targets=[Target(masks[i], None) for i in rec.instance_ids])
        status = next_status(rec.status, RefAction.REOPEN)
        rejection = None
        if last_decision is not None and rec.status == RefStatus.REJECTED:
            rejection = last_decision(rec.id)  # its fix goes back to review: the view says who rejected it and why
        return Reopened(new, rec.sentences, rec.split, status.value, rec.id, rejection)

    def image_name(self, image_id: int | None) -> str:
        """The collection image's file name (``""``: no image)."""
        return self.store.image(image_id).file_name if image_id is not None else ""

    def image_split(self, image_id: int) -> str:
        """The split the image was imported into (``""``: none)."""
        return self.store.image(image_id).split

    def keep_image(self, sess: Session) -> int:
        """The open image's id in the collection, adding an uploaded image to it first."""
        if sess.image_id is None:
            sess.image_id = self.store.add_image(sess.image)
        return sess.image_id

    def ref_picture(self, rec: RefRecord) -> tuple[np.ndarray | None, list[np.ndarray]]:
        """A ref's image (None: pixels not available) and its target masks, in the ref's order."""
        rgb = self.store.load_image(rec.image_id)
        masks = {i.id: i.mask for i in self.store.instances(rec.image_id)}
        return rgb, [masks[i] for i in rec.instance_ids]
