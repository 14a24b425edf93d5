"""``--refiner`` specs: ``grabcut`` (the default), ``sam:<hub repo>`` or ``sam:<local folder>``, and SAM 2:
``sam2:<hub repo>`` (``facebook/sam2.1-hiera-tiny``) or ``sam2:<local folder>``.

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
DEFAULT_SAM2 = "facebook/sam2.1-hiera-tiny"


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
    if spec.lower().startswith("sam2:"):
        source = spec.split(":", 1)[1].strip() or DEFAULT_SAM2
        try:
            from .sam2 import Sam2Refiner
            from .sam import SamUnavailable
            return Sam2Refiner.load(source, device=device, dtype=dtype)
        except ImportError as exc:  # pragma: no cover - torch missing
            log.warning("refiner: SAM 2 is not available (%s); using the offline GrabCut refiner", exc)
        except SamUnavailable as exc:
            log.warning("refiner: %s; using the offline GrabCut refiner", exc)
        return GrabCutRefiner()
    raise ValueError(f"unknown refiner {spec!r}: use 'grabcut', 'sam:{DEFAULT_SAM}', 'sam2:{DEFAULT_SAM2}' "
                     "or 'sam:/path/to/folder'")
