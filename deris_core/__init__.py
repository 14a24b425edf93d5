"""deris_core: a clean PyTorch DeRIS (referring image segmentation) with tooling."""

import sys as _sys

from . import env as _env

if _sys.platform == "darwin" and "torch" not in _sys.modules:
    # Apple's MPS lacks a few operations; PyTorch reads this when it loads, so set it before torch.
    _env.set_default("PYTORCH_ENABLE_MPS_FALLBACK", "1")

from .config import DeRISConfig, get_config
from .model import DeRIS, build_deris

__version__ = "0.1.0"
__all__ = ["DeRIS", "DeRISConfig", "build_deris", "get_config", "__version__"]
