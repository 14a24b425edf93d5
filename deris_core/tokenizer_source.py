"""Where the BEiT-3 tokenizer (``beit3.spm``) of an official checkpoint comes from.

In order, the first usable candidate wins:

1. an explicit path (``--tokenizer``, ``load_predictor(tokenizer=...)``);
2. ``DERIS_TOKENIZER``;
3. ``beit3.spm`` or ``tokenizer.spm`` next to the checkpoint;
4. the Hugging Face Hub: ``DERIS_HF_TOKENIZER_REPO`` (default: the checkpoint's repository),
   file ``DERIS_HF_TOKENIZER_FILE`` (default ``beit3.spm``);
5. the BEiT-3 release named in the official DeRIS README (``BEIT3_TOKENIZER_URL``, override
   with ``DERIS_TOKENIZER_URL``), downloaded once into the cache.

Downloads are bounded: each gets ``DERIS_TOKENIZER_DEADLINE`` seconds in all (default 120, so
start-up waits at most twice that; a server that trickles is given up on, not waited for), and a file larger than
``DERIS_TOKENIZER_MAX_BYTES`` (default 64 MiB; a BEiT-3 tokenizer is about 5 MB) is refused from
its announced size or, while streaming, before more than that is written.

Each candidate is validated: it must load as a sentencepiece model and its largest token id
must fit the checkpoint's text-embedding rows. An explicit path or ``DERIS_TOKENIZER`` that
fails is an error at once; the automatic places fall through, and when none works the error
lists every place tried and how to provide the file.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable, TypeVar

from . import env
from .errors import DerisError
from .hub import HubError, download, download_url
from .tokenizer import FAIRSEQ_OFFSET, BEiT3Tokenizer, TokenizerError
from .weight_cache import cache_dir

# The BEiT-3 release (microsoft/unilm beit3 README, "Text Tokenizer"; the DeRIS README links there).
BEIT3_TOKENIZER_URL = "https://github.com/addf400/files/releases/download/beit3/beit3.spm"
TOKENIZER_FILE = "beit3.spm"


DEADLINE_S = 120.0
MAX_BYTES = 64 << 20
T = TypeVar("T")


def download_limits() -> tuple[float, int]:
    """``(overall deadline in seconds, size cap in bytes)`` of tokenizer downloads, from the environment."""
    try:
        deadline = float(env.filled("DERIS_TOKENIZER_DEADLINE"))
        cap = int(env.filled("DERIS_TOKENIZER_MAX_BYTES"))
    except ValueError:
        raise TokenizerSourceError("DERIS_TOKENIZER_DEADLINE must be seconds and DERIS_TOKENIZER_MAX_BYTES a number "
                                   "of bytes") from None
    return max(0.1, deadline), max(1, cap)


def within(seconds: float, fn: Callable[[], T], what: str) -> T:
    """``fn()`` run on a helper thread and given up on after ``seconds`` (HubError): whatever the server
    does (trickling headers included), start-up waits no longer. A download given up on finishes or
    fails on its own and leaves no file behind (see :func:`deris_core.hub.download_url`)."""
    box: dict[str, object] = {}

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    t = threading.Thread(target=work, name="tokenizer-download", daemon=True)
    t.start()
    t.join(max(0.0, seconds))
    if t.is_alive():
        raise HubError(f"{what}: the download took longer than the {seconds:.0f} s allowed (DERIS_TOKENIZER_DEADLINE)")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


class TokenizerSourceError(DerisError, FileNotFoundError):
    """No usable tokenizer was found; the message lists every place tried."""


def largest_id(path: Path) -> int:
    """Largest token id the tokenizer can produce (fairseq layout: piece id + 1)."""
    tok = BEiT3Tokenizer(path)
    return tok.sp.GetPieceSize() - 1 + FAIRSEQ_OFFSET


def check(path: Path, vocab_rows: int | None) -> str | None:
    """``None`` when ``path`` is a usable tokenizer for ``vocab_rows`` embeddings, else why not."""
    if not path.is_file():
        return "no such file"
    try:
        top = largest_id(path)
    except TokenizerError:
        return "not a sentencepiece model"
    if vocab_rows is not None and top >= vocab_rows:
        return f"its largest id {top} does not fit the checkpoint's {vocab_rows} text-embedding rows"
    return None


def how_to_provide() -> str:
    return (f"download {TOKENIZER_FILE} (the BEiT-3 tokenizer: {BEIT3_TOKENIZER_URL}) and pass --tokenizer PATH, "
            f"set DERIS_TOKENIZER=PATH, or put it next to the checkpoint")


def resolve_tokenizer(
    explicit: str | os.PathLike | None,
    *,
    checkpoint: Path | None = None,
    vocab_rows: int | None = None,
    hub_repo: str | None = None,
    what: str = "the checkpoint",
) -> Path:
    """The first usable tokenizer for an official checkpoint (see the module docstring)."""
    for given, label in ((explicit, "--tokenizer"), (env.get("DERIS_TOKENIZER"), "DERIS_TOKENIZER")):
        if given:
            path = Path(given).expanduser()
            why = check(path, vocab_rows)
            if why:
                raise TokenizerSourceError(f"tokenizer {label}={path.name}: {why}. {how_to_provide()}.")
            return path
    tried: list[str] = []
    if checkpoint is not None:
        for name in (TOKENIZER_FILE, "tokenizer.spm"):
            path = checkpoint.parent / name
            why = check(path, vocab_rows)
            if why is None:
                return path
            tried.append(f"{name} next to the checkpoint ({why})")
    repo = env.filled("DERIS_HF_TOKENIZER_REPO") or hub_repo
    filename = env.get("DERIS_HF_TOKENIZER_FILE")
    deadline, cap = download_limits()
    if repo:
        try:
            path = within(deadline, lambda: download(repo, filename, max_bytes=cap),
                          f"could not get '{filename}' from '{repo}'")
            why = check(path, vocab_rows)
            if why is None:
                return path
            tried.append(f"Hub {repo}/{filename} ({why})")
        except HubError as exc:
            tried.append(f"Hub {repo}/{filename} ({str(exc).split(': ', 1)[-1]})")
    url = env.get("DERIS_TOKENIZER_URL")
    if url:
        dest = cache_dir() / "tokenizer" / Path(url).name
        try:
            path = within(deadline + 1.0, lambda: download_url(url, dest, max_bytes=cap, deadline_s=deadline),
                          f"could not get {url}")
            why = check(path, vocab_rows)
            if why is None:
                return path
            dest.unlink(missing_ok=True)  # not kept: the next start tries again
            tried.append(f"{url} ({why})")
        except HubError as exc:
            tried.append(f"{url} ({str(exc).split(': ', 1)[-1] if ': ' in str(exc) else exc})")
    raise TokenizerSourceError(
        f"no usable BEiT-3 tokenizer for {what}; tried: " + "; ".join(f"{i}) {t}" for i, t in enumerate(tried, 1))
        + f". To fix: {how_to_provide()}."
    )
