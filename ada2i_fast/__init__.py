"""ada2i_fast: Ada2I (multimodal emotion recognition in conversation) with fused kernels."""

from .batch import Batch
from .config import Ada2IConfig, TrainConfig
from .kernels import get_backend, set_backend, use_backend
from .model import Ada2I, Ada2IOutput, Prediction
from .pipeline import ConversationPipeline

__all__ = [
    "Ada2I",
    "Ada2IConfig",
    "Ada2IOutput",
    "Batch",
    "ConversationPipeline",
    "Prediction",
    "TrainConfig",
    "get_backend",
    "set_backend",
    "use_backend",
]
__version__ = "0.1.0"
