"""Benchmarks of the studio: the store, the annotator's actions, pre-annotation, latency, teams, the
learning loop, refinement (``python -m app.bench ...``) and the round trip in chromium
(``python -m app.bench.browser``)."""
