"""The annotate view's layout (:class:`AnnotateUI`): queue bar, picture, expression, candidates, the
image's refs, the collection filter and thumbnails, and the save row (handlers: :mod:`.annotate`)."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import gradio as gr

from ..viewkit.model_info import example_images, score_threshold
from ..viewkit.session import Session
from ..services import SPLITS, STATUSES, RefStatus
from . import display
from .canvas import make_canvas

REF_HEADERS = ["ref", "sentences", "targets", "status", "who", "when"]

# The view's own keys (app.ui.SHORTCUTS_JS), as the ? overlay lists them; the canvas's tools follow there.
ANNOTATE_KEYS: tuple[tuple[str, str], ...] = (
    ("PgDn / PgUp", "next / previous image, anywhere (also from a text box)"),
    ("Shift+PgDn", "next image without refs, anywhere"),
    ("D / A", "next / previous image, outside text boxes (the focus stays outside: D again goes on)"),
    ("Shift+D", "next image without refs, outside text boxes"),
    ("/", "to the expression box"),
    ("Enter", "in the expression box: run it (an empty box is ignored)"),
    ("Ctrl+Enter", "save the targets on the canvas"),
    ("Alt+N", "next expression: a new ref on this image, empty boxes"),
    ("Alt+1..9", "tick or untick candidate 1..9"),
    ("Esc", "leave a text box: the letter keys work again"),
    ("?", "this list (outside text boxes; also the canvas's ? button); Esc or ? closes it"),
)
KEYS_HINT = "PgDn / PgUp anywhere · A / D outside text boxes (Esc leaves one) · <b>?</b> all keys"


def keys_overlay_html() -> str:
    """The ? overlay (hidden until opened): the view's keys; the canvas's tools are added by the page."""
    import html

    rows = "".join(f"<tr><td><kbd>{html.escape(k)}</kbd></td><td>{html.escape(v)}</td></tr>" for k, v in ANNOTATE_KEYS)
    return ("<div id='keys-overlay' class='keys-overlay' role='dialog' aria-label='Keys of the Annotate view' hidden>"
            "<div class='keys-card'><button class='keys-close' title='Close (Esc)'>×</button>"
            f"<h3>Keys of the Annotate view</h3><table class='keys-view'>{rows}</table>"
            "<h4>On the canvas (outside text boxes)</h4><ul class='keys-canvas'></ul></div></div>")


def _pass_file_through(payload):
    """Pre-processing for the upload: hand over the file untouched, so that
    :func:`deris_core.preprocess.load_image` decodes it and names any problem."""
    return None if payload is None else str(payload.path)


@dataclass
class AnnotateUI:
    """The Annotate tab's widgets (its own: no other view reads them)."""

    queue_pos: gr.HTML
    prev_img: gr.Button
    next_img: gr.Button
    next_empty: gr.Button
    result: gr.HTML  # the canvas (app.views.canvas)
    parts: gr.HTML
    expression: gr.Textbox
    run_btn: gr.Button
    speculate: gr.Button  # hidden: the page clicks it once the typed expression has been still a moment
    next_expr_btn: gr.Button
    keep_expr: gr.Checkbox
    score_thr: gr.Slider
    mask_thr: gr.Slider
    upload_box: gr.Accordion
    image_in: gr.Image
    to_fix: gr.Dataframe
    verdict: gr.HTML
    candidates: gr.CheckboxGroup
    image_refs: gr.Dataframe
    ref_history: gr.HTML
    gallery: gr.Gallery
    f_name: gr.Textbox
    f_split: gr.Dropdown
    f_status: gr.Dropdown
    f_annotator: gr.Textbox
    f_order: gr.Dropdown
    thumbs: gr.Gallery
    thumb_prev: gr.Button
    thumb_page: gr.Number
    thumb_next: gr.Button
    split: gr.Dropdown
    status: gr.Dropdown
    extra: gr.Textbox
    save_btn: gr.Button
    save_msg: gr.Markdown

    @property
    def filters(self) -> list:
        """The queue filter boxes, in the order the handlers take them (name, split, status, annotator, order)."""
        return [self.f_name, self.f_split, self.f_status, self.f_annotator, self.f_order]

    @property
    def ref_fields(self) -> list:
        """The boxes that belong to the ref being worked on (paraphrases, split, status, its history), in the
        order the handlers return them: they follow the ref (app.views.annotate.new_ref_fields)."""
        return [self.extra, self.split, self.status, self.ref_history]


def layout(predictor, refine=None, upcoming=None, typed=None) -> AnnotateUI:
    """Lay the tab out (inside the shell's ``gr.Tab``); ``predictor`` picks the examples and threshold;
    ``refine``: the canvas's prompt tools' server call (:func:`app.views.prompts.refine_on_canvas`), None: no prompt tools;
    ``upcoming``: its call for the next picture (:func:`app.views.annotate.upcoming_for`), None: not loaded ahead;
    ``typed``: its call for the typed expression's answer (:func:`app.views.annotate.typed_for`), None: not loaded ahead."""
    c = SimpleNamespace()  # the widgets as they are made; checked by the dataclass at the end
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            with gr.Row(elem_classes="queue-bar"):
                c.queue_pos = gr.HTML(display.queue_html(None, 0), elem_id="queue-pos-box")
                c.prev_img = gr.Button("◀ Prev (PgUp · A)", size="sm", elem_id="prev-img", scale=0, min_width=120)
                c.next_img = gr.Button("Next ▶ (PgDn · D)", size="sm", elem_id="next-img", scale=0, min_width=120)
                c.next_empty = gr.Button("Next without refs (Shift+PgDn · Shift+D)", size="sm", elem_id="next-empty",
                                         scale=0, min_width=200)
            gr.HTML(f"<div class='keys-hint'>{KEYS_HINT}</div>{keys_overlay_html()}", elem_id="keys-hint-box",
                    padding=False)
            with gr.Row(equal_height=True, elem_id="expression-row"):  # the expression above the picture: typing never scrolls it away
                c.expression = gr.Textbox(label="Expression (Enter runs)", placeholder="e.g. the two red circles", lines=1,
                                          max_lines=1, elem_id="expression", scale=4)
                c.run_btn = gr.Button("Segment", variant="primary", elem_id="segment-btn", scale=0, min_width=100)
                c.speculate = gr.Button("", visible="hidden", elem_id="speculate-btn", scale=0, min_width=0)
                c.next_expr_btn = gr.Button("Next expression (Alt+N)", elem_id="next-btn", scale=0, min_width=120)
            c.result = make_canvas("canvas", height=400, refine=refine, upcoming=upcoming, typed=typed)
            c.parts = gr.HTML("", elem_id="canvas-parts-box")
            c.keep_expr = gr.Checkbox(label="Keep the expression for the next image (runs it at once)", value=False,
                                      elem_id="keep-expr")
            with gr.Accordion("Thresholds", open=False):
                c.score_thr = gr.Slider(0.0, 1.0, value=score_threshold(predictor), step=0.01,
                                        label="Score threshold (starts at the model's own)", elem_id="score-thr")
                c.mask_thr = gr.Slider(0.05, 0.95, value=0.5, step=0.01, label="Mask threshold", elem_id="mask-thr")
            with gr.Accordion("Add an image (upload, paste, webcam, examples)", open=False, elem_id="upload-box") as c.upload_box:
                c.image_in = gr.Image(type="filepath", label="Image", sources=["upload", "clipboard", "webcam"],
                                      elem_id="image-input", height=260)
                c.image_in.preprocess = _pass_file_through
                examples = example_images(predictor)  # photos for official weights, shapes for bundled
                if examples:
                    gr.Examples([[str(p)] for p in examples], inputs=[c.image_in], label="Examples")
        with gr.Column(scale=2):
            c.verdict = gr.HTML(display.verdict_html(Session()), elem_id="verdict-box")
            with gr.Group(elem_id="save-box"):  # saving sits beside the picture, above the fold
                with gr.Row():
                    c.split = gr.Dropdown(list(SPLITS), value="train", label="Split", scale=1, elem_id="split")
                    c.status = gr.Dropdown([s for s in STATUSES if s != RefStatus.PREDICTED], value=RefStatus.DONE.value, label="Review status",
                                           scale=1, elem_id="status")
                    c.save_btn = gr.Button("Save (Ctrl+Enter)", variant="primary", scale=1, elem_id="save-btn")
                c.extra = gr.Textbox(label="More sentences for the same targets (one per line)", lines=1, elem_id="extra")
            c.save_msg = gr.Markdown("", elem_id="save-msg")
            # below the save box, so that a long list never pushes Save below the fold
            # tall enough for its comment column; at 1440x900 no header wraps ("re / f", "revi / ewer" at
            # 7% and 12%) and the comment, the widest column, wraps inside its cell
            c.to_fix = gr.Dataframe(headers=["ref", "sentences", "reason", "comment", "reviewer"], value=[],
                                    interactive=False, elem_id="to-fix", wrap=True, max_height=420, visible=False,
                                    column_widths=["10%", "23%", "20%", "28%", "19%"],
                                    label="Rejected: fix these first (click a row to open it)")
            c.candidates = gr.CheckboxGroup(label="Candidates (best first; numbers match the picture; Alt+1..9)",
                                            choices=[], elem_id="candidates")
            c.image_refs = gr.Dataframe(headers=REF_HEADERS, value=[], interactive=False, elem_id="image-refs",
                                        column_widths=["10%", "25%", "17%", "19%", "15%", "14%"],
                                        label="Refs on this image (click a row to reopen it)", wrap=True, max_height=240)
            with gr.Accordion("History of the open ref", open=False):
                c.ref_history = gr.HTML("", elem_id="ref-history")
            with gr.Accordion("Candidate masks", open=False):
                c.gallery = gr.Gallery(label="Candidate masks", columns=5, height=200, elem_id="gallery", format="jpeg")
            with gr.Accordion("Collection: filter and jump", open=False, elem_id="collection-box"):
                with gr.Row():
                    c.f_name = gr.Textbox(label="File name contains", elem_id="q-name", scale=2)
                    c.f_split = gr.Dropdown(["", *SPLITS], value="", label="Split", elem_id="q-split", scale=1)
                    c.f_status = gr.Dropdown([("any", ""), ("no refs", "none"), ("to do (no refs, drafts, to verify)", "todo"),
                                              ("to verify (predicted)", RefStatus.PREDICTED.value),
                                              *[(s, s) for s in STATUSES if s != RefStatus.PREDICTED]],
                                             value="", label="Status", elem_id="q-status", scale=1)
                    c.f_annotator = gr.Textbox(label="Annotator", elem_id="q-annotator", scale=1)
                    c.f_order = gr.Dropdown([("by id", ""), ("most uncertain first (model)", "uncertain")], value="",
                                            label="Order", elem_id="q-order", scale=1)
                c.thumbs = gr.Gallery(label="Images (click to open)", columns=6, height=260, elem_id="thumbs",
                                      allow_preview=False, format="jpeg")
                with gr.Row():
                    c.thumb_prev = gr.Button("◀ Earlier images", size="sm", elem_id="thumbs-prev")
                    c.thumb_page = gr.Number(value=0, visible=False, precision=0)
                    c.thumb_next = gr.Button("Later images ▶", size="sm", elem_id="thumbs-next")
    return AnnotateUI(**vars(c))
