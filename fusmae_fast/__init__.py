"""fusmae_fast: a fast, faithful, tested Fus-MAE (Chan-To-Hing & Veeravalli, IGARSS 2024)."""

from fusmae_fast.checkpoint import export_encoder, load_encoder
from fusmae_fast.config import ModelConfig
from fusmae_fast.model import FusMAE, build_model

__version__ = "0.1.0"

__all__ = ["FusMAE", "ModelConfig", "build_model", "export_encoder", "load_encoder", "__version__"]
