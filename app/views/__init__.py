"""The studio's views (annotate, correct, dataset, model panel): each lays out its components and
wires its handlers; :mod:`app.views.display` holds the pure rendering helpers."""
