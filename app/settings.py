"""The studio's settings from the environment, read in one place (``Settings.from_env``): the
defaults of ``launch.py``'s options, the Hugging Face Space / ZeroGPU variables, and torchrun's
rank variables. (``deris_core`` reads its own through :mod:`deris_core.env`: caches, Hub endpoints,
tokenizer sources.)

Every variable the app reads is listed in :data:`VARIABLES` (docs/environment.md is generated from
it with the core's table) and read through this module: :class:`Settings` for what an entry point
passes down, :func:`environ` for the store's own readers (database URL, timeouts, role).

Each entry point (``launch.py``, ``python -m app.curate``, ``python -m app.dataset``) reads the
settings once with ``install(Settings.from_env())``; code below it is handed them, or reads the
installed ones with :func:`current` where a decorator runs at import (``app.zerogpu.gpu``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, NamedTuple


class Var(NamedTuple):
    """One variable the app reads (the shape of :class:`deris_core.env.Var`; importing the core here
    would load torch before ``launch.py --help`` can answer)."""

    name: str
    default: str | None
    doc: str


VARIABLES: tuple[Var, ...] = (
    Var("DERIS_WEIGHTS", None, "`launch.py --weights` when not given"),
    Var("DERIS_DTYPE", "auto", "`launch.py --dtype` when not given (the core reads it too)"),
    Var("DERIS_DEFAULT_MODEL", "deris-l-grefcoco", "the official weights the studio tries first"),
    Var("GRADIO_SERVER_NAME", "127.0.0.1", "`launch.py --host` when not given"),
    Var("GRADIO_SERVER_PORT", "7860", "`launch.py --port` when not given"),
    Var("DERIS_DB", None, "`launch.py --db` when not given"),
    Var("DERIS_DB_URL", None, "the database (a PostgreSQL URL) of every command when `--db` and `DERIS_DB` are not given"),
    Var("DERIS_AUTH_FILE", None, "`launch.py --auth-file` when not given"),
    Var("DERIS_REFINER", "grabcut", "`launch.py --refiner` when not given: grabcut, sam:<Hub repo> or sam:<folder>"),
    Var("SPACE_ID", None, "set by Hugging Face Spaces: running on a Space"),
    Var("SPACES_ZERO_GPU", None, "set by Hugging Face Spaces on ZeroGPU hardware"),
    Var("DERIS_GPU_DURATION", "30", "seconds of GPU one call may hold on ZeroGPU"),
    Var("RANK", "0", "set by torchrun: this process's rank"),
    Var("WORLD_SIZE", "1", "set by torchrun: number of processes"),
    Var("LOCAL_RANK", "0", "set by torchrun: this process's GPU on its node"),
    Var("DERIS_DB_LOCK_WAIT", "5", "seconds a save waits for the writers' lock before \"the database is busy\""),
    Var("DERIS_DB_BATCH_LOCK_WAIT", "120", "the same for batch commands (`app.dataset`, `app.curate`)"),
    Var("DERIS_DB_STATEMENT_TIMEOUT", "60", "PostgreSQL `statement_timeout` of every statement (0: none)"),
    Var("DERIS_DB_IDLE_TX_TIMEOUT", "120", "PostgreSQL `idle_in_transaction_session_timeout` (0: none)"),
    Var("DERIS_ROLE", None, "what this process calls itself in PostgreSQL's `application_name` "
        "(default: from its command line)"),
    Var("DERIS_CHROMIUM", None, "the browser of `app.bench.browser` (default: `chromium` on the PATH)"),
)
_NAMES = {v.name for v in VARIABLES}


def environ() -> Mapping[str, str]:
    """This process's environment, for readers that take an ``env`` mapping (tests pass their own)."""
    return os.environ


def get(name: str, default: str | None = None) -> str | None:
    """A variable of :data:`VARIABLES` as set, else ``default`` (KeyError for one the table lacks)."""
    if name not in _NAMES:
        raise KeyError(f"{name} is not in app.settings.VARIABLES")
    return os.environ.get(name, default)


def child_env(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with ``overrides``, for a child process (a benchmark's server)."""
    return {**os.environ, **(overrides or {})}


def environment_markdown() -> str:
    """docs/environment.md's body: the core's table, then the app's."""
    from deris_core.env import VARIABLES as CORE
    from deris_core.env import markdown

    return ("## deris_core (`deris_core/env.py`)\n\n" + markdown(CORE) + "\n\n"
            "## The studio (`app/settings.py`)\n\n" + markdown(VARIABLES) + "\n")


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "t", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    weights: str | None = None  # DERIS_WEIGHTS: --weights
    dtype: str = "auto"  # DERIS_DTYPE: --dtype
    default_model: str = "deris-l-grefcoco"  # DERIS_DEFAULT_MODEL: the official weights tried first
    host: str = "127.0.0.1"  # GRADIO_SERVER_NAME
    port: int = 7860  # GRADIO_SERVER_PORT
    refiner: str = "grabcut"  # DERIS_REFINER: --refiner (grabcut, sam:<hub repo>, sam:<folder>)
    db: str | None = None  # DERIS_DB: --db
    db_url: str | None = None  # DERIS_DB_URL: --db as a PostgreSQL URL (used when DERIS_DB is not set)
    auth_file: str | None = None  # DERIS_AUTH_FILE: --auth-file
    space_id: str | None = None  # SPACE_ID: running on a Hugging Face Space
    zero_gpu: bool = False  # SPACES_ZERO_GPU: ... on ZeroGPU hardware
    gpu_duration: int = 30  # DERIS_GPU_DURATION: seconds of GPU one call may hold on ZeroGPU
    rank: int = 0  # RANK, WORLD_SIZE, LOCAL_RANK: set by torchrun
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        e = os.environ if env is None else env
        return cls(
            weights=e.get("DERIS_WEIGHTS") or None, dtype=e.get("DERIS_DTYPE", "auto"),
            default_model=e.get("DERIS_DEFAULT_MODEL", "deris-l-grefcoco"), refiner=e.get("DERIS_REFINER") or "grabcut",
            host=e.get("GRADIO_SERVER_NAME", "127.0.0.1"), port=int(e.get("GRADIO_SERVER_PORT", "7860")),
            db=e.get("DERIS_DB") or None, db_url=e.get("DERIS_DB_URL") or None, auth_file=e.get("DERIS_AUTH_FILE") or None,
            space_id=e.get("SPACE_ID") or None, zero_gpu=_flag(e.get("SPACES_ZERO_GPU")),
            gpu_duration=int(e.get("DERIS_GPU_DURATION", "30")),
            rank=int(e.get("RANK", 0)), world_size=int(e.get("WORLD_SIZE", 1)), local_rank=int(e.get("LOCAL_RANK", 0)),
        )


def studio_db(settings: Settings | None = None, cwd: Path | None = None) -> str:
    """The database a command uses when given no ``--db``: ``$DERIS_DB``, else ``$DERIS_DB_URL``, else
    ``/data/deris_studio.sqlite`` on a Hugging Face Space with persistent storage, else
    ``deris_studio.sqlite`` in the working folder. ``launch.py`` and ``python -m app.dataset`` share
    it, so ``import-images DIR`` fills the database the studio then opens."""
    s = settings or current()
    if s.db or s.db_url:
        return str(s.db or s.db_url)
    if Path("/data").is_dir() and s.space_id:
        return str(Path("/data/deris_studio.sqlite"))
    return str((cwd or Path.cwd()) / "deris_studio.sqlite")


_installed: Settings | None = None


def install(settings: Settings | None) -> Settings | None:
    """Make ``settings`` this process's settings (an entry point calls it once; None: none yet); returns them."""
    global _installed
    _installed = settings
    return settings


def current() -> Settings:
    """The settings the entry point installed (read from the environment once if none did)."""
    return _installed if _installed is not None else install(Settings.from_env())
