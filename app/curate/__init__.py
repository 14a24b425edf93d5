"""The model at dataset scale: batch pre-annotation into the store, model-vs-annotation QA and
annotator agreement (functions over the store; ``python -m app.curate`` is their CLI)."""

from .preannotate import Pair, PairResult, apply_threshold, model_key, pairs_from_jsonl, pairs_from_sentences, rethreshold
from .quality import agreement, qa
from .runner import Summary, run

__all__ = ["Pair", "PairResult", "Summary", "agreement", "apply_threshold", "model_key", "pairs_from_jsonl",
           "pairs_from_sentences", "qa", "rethreshold", "run"]
