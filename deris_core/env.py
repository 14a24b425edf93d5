"""Every environment variable ``deris_core`` reads, in one table (:data:`VARIABLES`), and the small
typed accessors the modules read them through. No other module of the core touches ``os.environ``
(tests/test_environment.py checks it), so this table is the complete list; ``docs/environment.md``
is generated from it (:func:`markdown`).

Each accessor keeps the reading its module always had: :func:`get` returns a variable set to the
empty string as empty (``DERIS_TOKENIZER_URL=`` switches the download off), :func:`filled` treats
empty as unset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Mapping


@dataclass(frozen=True)
class Var:
    """One environment variable: its name, its default (None: none, the feature is off or another
    source decides) and what it does."""

    name: str
    default: str | None
    doc: str


VARIABLES: tuple[Var, ...] = (
    Var("DERIS_CACHE", None, "folder of converted checkpoints and downloaded tokenizers "
        "(default `$XDG_CACHE_HOME/deris`, else `~/.cache/deris`)"),
    Var("XDG_CACHE_HOME", None, "base of the default cache folder when `DERIS_CACHE` is not set"),
    Var("DERIS_DTYPE", "auto", "precision when `--dtype` is not given: auto, fp32, bf16 or int8"),
    Var("DERIS_ONEDNN_PREPACK", "1", "`0`: the CPU linears run plain `F.linear` instead of oneDNN's packed weights"),
    Var("ONEDNN_MAX_CPU_ISA", None, "oneDNN's own cap on the instruction set; read to tell whether bf16 kernels can run"),
    Var("PYTORCH_ENABLE_MPS_FALLBACK", None, "`1`: operations Apple's MPS lacks run on the CPU (set to 1 on macOS "
        "when `deris_core` is imported before torch)"),
    Var("DERIS_PIN_MALLOC", None, "`1`: the command lines cap glibc's heap growth (steadier memory on long runs)"),
    Var("DERIS_HF_REPO", "Dmmm997/DeRIS", "Hub repository of the official checkpoints"),
    Var("DERIS_HF_FILE_<NAME>", None, "file name of published model NAME in that repository, e.g. "
        "`DERIS_HF_FILE_DERIS_L_GREFCOCO` (default: the official file name)"),
    Var("DERIS_TOKENIZER", None, "the sentencepiece tokenizer of official checkpoints (a file), before any download"),
    Var("DERIS_HF_TOKENIZER_REPO", None, "Hub repository the tokenizer is fetched from (default: the checkpoint's)"),
    Var("DERIS_HF_TOKENIZER_FILE", "beit3.spm", "the tokenizer's file name in that repository"),
    Var("DERIS_TOKENIZER_URL", "https://github.com/addf400/files/releases/download/beit3/beit3.spm",
        "URL of the BEiT-3 tokenizer, the last source tried (empty: no download)"),
    Var("DERIS_TOKENIZER_DEADLINE", "120", "seconds a tokenizer download may take in all"),
    Var("DERIS_TOKENIZER_MAX_BYTES", str(64 << 20), "size cap of a tokenizer download, in bytes"),
    Var("HF_HUB_OFFLINE", None, "`1`/`true`/`yes`/`on`: no network, only what the Hugging Face cache holds"),
    Var("HF_HUB_ETAG_TIMEOUT", None, "seconds to wait for the Hub's answer about a file (default: huggingface_hub's)"),
    Var("HF_HUB_DOWNLOAD_TIMEOUT", "30", "seconds a stalled download is waited for"),
    Var("DERIS_REFERENCE", None, "folder of the reference measurements the benchmarks compare with"),
    Var("WORLD_SIZE", "1", "set by torchrun: number of training processes"),
    Var("LOCAL_RANK", None, "set by torchrun: this process's GPU on its node (default: its rank)"),
    Var("DERIS_LOG_LEVEL", None, "log level of the command lines when `--log-level`/`-v` is not given: DEBUG, "
        "INFO, WARNING or ERROR (default: INFO; WARNING for `deris_core.tools.predict`)"),
)
_BY_NAME = {v.name: v for v in VARIABLES}
_FAMILIES = {v.name.split("<", 1)[0]: v for v in VARIABLES if "<" in v.name}


def variable(name: str) -> Var:
    """The table's entry for ``name`` (KeyError for a variable the table does not list: add it first)."""
    if name in _BY_NAME:
        return _BY_NAME[name]
    for prefix, var in _FAMILIES.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            return var
    raise KeyError(f"{name} is not in deris_core.env.VARIABLES")


def get(name: str, default: str | None = None) -> str | None:
    """The variable as set (an empty value stays empty), else ``default`` or the table's default."""
    var = variable(name)
    return os.environ.get(name, var.default if default is None else default)


def filled(name: str, default: str | None = None) -> str | None:
    """The variable when set to something non-empty, else ``default`` or the table's default."""
    var = variable(name)
    return os.environ.get(name) or (var.default if default is None else default)


def is_set(name: str) -> bool:
    """Whether the variable is set to something non-empty."""
    variable(name)
    return bool(os.environ.get(name))


def flag(name: str, true: Iterable[str] = ("1", "true", "yes", "on")) -> bool:
    """A yes/no variable: one of ``true`` (case and surrounding blanks ignored)."""
    return (get(name) or "").strip().lower() in tuple(true)


def set_default(name: str, value: str) -> None:
    """Set the variable for this process (and the libraries it loads) unless it is set already."""
    variable(name)
    os.environ.setdefault(name, value)


def child_env(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with ``overrides``: what a child process (a benchmark's server) gets."""
    return {**os.environ, **(overrides or {})}


def markdown(variables: Iterable[Var] = VARIABLES) -> str:
    """The table as markdown rows (docs/environment.md is made of these)."""
    rows = ["| Variable | Default | What it does |", "|---|---|---|"]
    rows += [f"| `{v.name}` | {f'`{v.default}`' if v.default else '—'} | {v.doc} |" for v in variables]
    return "\n".join(rows)
