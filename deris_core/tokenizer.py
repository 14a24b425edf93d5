"""BEiT-3 tokenizer: XLM-R sentencepiece ids with the official cleaning and padding.

The official demo lower-cases the expression, deletes ``. , ' ! ? " ( ) * # : ;``, turns
``-`` and ``/`` into spaces, tokenises with ``XLMRobertaTokenizer(beit3.spm)`` (sentencepiece
pieces shifted by the fairseq offset of 1, unknown pieces -> ``<unk>`` = 3), keeps at most
``max_token - 2`` ids, wraps them as ``[bos=0] ... [eos=2]`` and pads with ``pad=1``. The
padding mask is 1 at padded positions. We reproduce that with ``sentencepiece`` alone.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import DerisError

log = logging.getLogger(__name__)

BOS, PAD, EOS, UNK = 0, 1, 2, 3
FAIRSEQ_OFFSET = 1
MAX_EXPRESSION_CHARS = 2000  # longer input is refused: no expression needs it
_PUNCT = re.compile(r"[.,'!?\"()*#:;]")


class TokenizerError(DerisError, ValueError):
    """An expression that cannot be tokenised, or a missing/broken tokenizer model."""


def clean_expression(text: str) -> str:
    """The official cleaning (lower case, punctuation removed, '-' and '/' to spaces)."""
    return _PUNCT.sub("", text.lower()).replace("-", " ").replace("/", " ")


@dataclass
class Encoded:
    ids: torch.Tensor  # [max_token] int64
    padding_mask: torch.Tensor  # [max_token] int64, 1 = padding
    num_tokens: int  # real tokens including bos/eos
    truncated: bool  # the expression had more than max_token - 2 pieces


class BEiT3Tokenizer:
    """Sentencepiece tokenizer producing DeRIS token ids."""

    def __init__(self, model_file: str | os.PathLike, max_token: int = 50) -> None:
        import sentencepiece as spm

        path = Path(model_file)
        if not path.is_file():
            raise TokenizerError(f"sentencepiece model not found: {path}")
        self.model_file = path
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.Load(str(path))
        except Exception as exc:  # noqa: BLE001 - sentencepiece raises OSError or RuntimeError by version: one line
            log.debug("loading %s failed", path, exc_info=True)
            raise TokenizerError(f"{path} is not a sentencepiece model: {exc}") from None
        if max_token < 3:
            raise TokenizerError("max_token must be at least 3")
        self.max_token = max_token

    @property
    def vocab_size(self) -> int:
        """Largest id this tokenizer can produce, plus one (fairseq layout)."""
        return self.sp.GetPieceSize() + FAIRSEQ_OFFSET + 1

    def piece_ids(self, expression: str) -> list[int]:
        """Ids of the cleaned expression without bos/eos/padding."""
        pieces = self.sp.EncodeAsPieces(clean_expression(expression))
        ids = []
        for piece in pieces:
            sp_id = self.sp.PieceToId(piece)
            ids.append(sp_id + FAIRSEQ_OFFSET if sp_id else UNK)
        return ids

    def encode(self, expression: str) -> Encoded:
        """Token ids and padding mask of one expression (truncated to ``max_token - 2`` pieces)."""
        if not isinstance(expression, str):
            raise TokenizerError(f"expression must be text, got {type(expression).__name__}")
        if len(expression) > MAX_EXPRESSION_CHARS:
            raise TokenizerError(
                f"expression is {len(expression)} characters long; the limit is {MAX_EXPRESSION_CHARS} "
                f"(only the first {self.max_token - 2} tokens are used anyway)"
            )
        ids = self.piece_ids(expression)
        if not ids:
            raise TokenizerError("expression is empty after cleaning (it must contain at least one word)")
        truncated = len(ids) > self.max_token - 2
        ids = [BOS] + ids[: self.max_token - 2] + [EOS]
        n = len(ids)
        padded = ids + [PAD] * (self.max_token - n)
        mask = [0] * n + [1] * (self.max_token - n)
        return Encoded(torch.tensor(padded, dtype=torch.long), torch.tensor(mask, dtype=torch.long), n, truncated)

    def encode_batch(self, expressions: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[Encoded]]:
        encoded = [self.encode(e) for e in expressions]
        return torch.stack([e.ids for e in encoded]), torch.stack([e.padding_mask for e in encoded]), encoded


def train_sentencepiece(sentences: list[str], out_prefix: str | os.PathLike, vocab_size: int = 200) -> Path:
    """Train a small unigram sentencepiece model on cleaned sentences (tests, bundled model)."""
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.Train(
        sentence_iterator=iter([clean_expression(s) for s in sentences]),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    path = Path(str(out_prefix) + ".spm")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.getvalue())
    return path
