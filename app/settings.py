"""The studio's settings from the environment, read in one place (``Settings.from_env``): the
defaults of ``launch.py``'s options, the Hugging Face Space / ZeroGPU variables, and torchrun's
rank variables. (``deris_core`` reads its own: caches, Hub endpoints, tokenizer sources.)"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping


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
