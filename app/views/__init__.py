"""The studio's views, one module per tab (annotate with annotate_layout, correct, review,
dataset_tab) and the model panel: each owns a layout dataclass of its widgets, module-level
handlers of ``(services, inputs...)`` and a small ``wire``; :mod:`.shell` is what the shell
(:mod:`app.ui`) hands them, :mod:`.display` the pure rendering helpers. No view imports another.
"""
