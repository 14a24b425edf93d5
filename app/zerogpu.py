"""Hugging Face ZeroGPU conventions, and nothing at all elsewhere.

On a ZeroGPU Space (``SPACE_ID`` and ``SPACES_ZERO_GPU`` set, the variables such a Space
has, and the ``spaces`` package importable) the model is
placed on ``cuda`` when ``launch`` is imported, and every function that runs the network is
wrapped in ``spaces.GPU(duration=...)``: a GPU is attached only while such a function runs.
Without ``spaces`` (a laptop, CI, another host) :func:`gpu` returns the function unchanged and
the requested device is used.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from .settings import Settings, current


def spaces_module() -> Any | None:
    """The ``spaces`` package, or None when it is not installed."""
    try:
        return importlib.import_module("spaces")
    except ImportError:
        return None


def on_zerogpu(settings: Settings | None = None) -> bool:
    """A Hugging Face Space on ZeroGPU hardware with the ``spaces`` package (a CPU or dedicated-GPU
    Space has ``SPACE_ID`` and often ``spaces`` too, but no ``SPACES_ZERO_GPU``: no cuda placement there).
    ``settings``: the entry point's (default: the installed ones, :func:`app.settings.current`)."""
    settings = settings or current()
    return bool(settings.space_id) and settings.zero_gpu and spaces_module() is not None


def gpu(fn: Callable, settings: Settings | None = None) -> Callable:
    """``spaces.GPU(duration=DERIS_GPU_DURATION)(fn)`` on ZeroGPU, else ``fn`` itself. The duration is
    the seconds of GPU one call may hold: a full-size set_image + predict takes well under a second
    on a GPU; the default 30 covers the first call's CUDA start-up; shorter durations queue sooner."""
    settings = settings or current()
    if not on_zerogpu(settings):
        return fn
    return spaces_module().GPU(duration=settings.gpu_duration)(fn)


def model_device(requested: str = "auto", settings: Settings | None = None) -> str:
    """Where the model goes: ``cuda`` on ZeroGPU (the docs ask for it at import time), else ``requested``."""
    return "cuda" if on_zerogpu(settings) else requested
