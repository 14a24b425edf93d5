"""Promptable refinement: points, a box and a prior mask turned into a mask (issue 37).

:mod:`.base` the :class:`Refiner` protocol, :mod:`.grabcut` the offline default (no weights),
:mod:`.sam` SAM through ``transformers``, :mod:`.build` ``--refiner`` specs, :mod:`.clicks` the
simulated-click protocol (NoC@85/90), :mod:`.session` one instance's prompts for the canvas,
:mod:`.bench` ``python -m app.bench refine``.
"""

from .base import Prompts, RefineError, RefineResult, Refiner
from .build import build_refiner
from .session import RefineSession

__all__ = ["Prompts", "RefineError", "RefineResult", "Refiner", "RefineSession", "build_refiner"]
