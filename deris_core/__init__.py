"""deris_core: a clean PyTorch DeRIS (referring image segmentation) with tooling."""

from .config import DeRISConfig, get_config
from .model import DeRIS, build_deris

__version__ = "0.1.0"
__all__ = ["DeRIS", "DeRISConfig", "build_deris", "get_config", "__version__"]
