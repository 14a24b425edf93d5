"""``--refiner`` specs: ``grabcut`` (the default), ``sam:<hub repo>`` or ``sam:<local folder>``.

A SAM spec whose weights cannot be had (offline, no network, a missing folder, transformers not
installed) logs one line saying so and returns the GrabCut default: the studio still starts and
refines.
"""

from __future__ import annotations

import logging

from .base import Refiner
from .grabcut import GrabCutRefiner

log = logging.getLogger(__name__)

DEFAULT_SAM = "facebook/sam-vit-base"


def build_refiner(spec: str | None = "grabcut", *, device: str = "auto", dtype: str | None = None) -> Refiner:
    """The refiner ``spec`` names; the GrabCut default (with one logged line) when SAM cannot load."""
    spec = (spec or "grabcut").strip()
    if spec.lower() in ("grabcut", "offline", "default"):
        return GrabCutRefiner()
    if spec.lower() == "sam" or spec.lower().startswith("sam:"):
        source = spec.split(":", 1)[1].strip() if ":" in spec else DEFAULT_SAM
        try:
            from .sam import SamRefiner, SamUnavailable
        except ImportError as exc:  # pragma: no cover - torch missing
            log.warning("refiner: SAM is not available (%s); using the offline GrabCut refiner", exc)
            return GrabCutRefiner()
        try:
            return SamRefiner.load(source or DEFAULT_SAM, device=device, dtype=dtype)
        except SamUnavailable as exc:
            log.warning("refiner: %s; using the offline GrabCut refiner", exc)
            return GrabCutRefiner()
    raise ValueError(f"unknown refiner {spec!r}: use 'grabcut', 'sam:{DEFAULT_SAM}' or 'sam:/path/to/folder'")
