"""ada2i_fast: Ada2I (multimodal emotion recognition in conversation) with fused kernels."""

from .config import Ada2IConfig, TrainConfig
from .inference.pipeline import ConversationPipeline
from .kernels import get_backend, set_backend, use_backend
from .modules.batch import Batch
from .modules.model import Ada2I, Ada2IOutput, Prediction
from .training.step import make_optimizer, train_step

__all__ = [
    "Ada2I",
    "Ada2IConfig",
    "Ada2IOutput",
    "Batch",
    "ConversationPipeline",
    "Prediction",
    "TrainConfig",
    "get_backend",
    "make_optimizer",
    "set_backend",
    "train_step",
    "use_backend",
]
__version__ = "0.1.0"
