"""deris_core: a clean PyTorch DeRIS (referring image segmentation) with tooling."""

import sys as _sys

from . import env as _env

if _sys.platform == "darwin" and "torch" not in _sys.modules:
    # Apple's MPS lacks a few operations; PyTorch reads this when it loads, so set it before torch.
    _env.set_default("PYTORCH_ENABLE_MPS_FALLBACK", "1")

__version__ = "0.1.0"
__all__ = ["DeRIS", "DeRISConfig", "build_deris", "get_config", "__version__"]
_LAZY = {"DeRIS": ".model", "build_deris": ".model", "DeRISConfig": ".config", "get_config": ".config"}


def __getattr__(name: str):
    """The model and its config on first use: importing a torch-free part of the package (the command
    lines' ``--help``, ``deris_core.dtypes``, ``deris_core.env``) does not load torch."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
