"""How many weights the model of an :class:`Ada2IConfig` has, counted from the config alone, and
refusing a model whose weights would not fit in memory before any layer is built."""

from __future__ import annotations

from .config import Ada2IConfig
from .data.memory import check_fits_in_memory

BYTES_PER_WEIGHT = 4  # float32


def model_parameters(config: Ada2IConfig) -> int:
    """The number of weights of ``Ada2I(config)``: encoders, AFW layers and the head."""
    encoders = sum(_encoder_parameters(config.input_dims[m], config) for m in config.modalities)
    m, h, r = config.n_modalities, config.hidden, config.rank
    afw_layer = m * (4 * r * h + 4 * r + h * r * r + h + h * h + h)
    head = m * h * config.num_classes + config.num_classes
    return encoders + config.mmt_nlayers * afw_layer + head


def _encoder_parameters(d: int, config: Ada2IConfig) -> int:
    if config.encoder == "lstm":
        units = config.hidden // 2
        first, later = 4 * units * (d + units) + 8 * units, 4 * units * (2 * units + units) + 8 * units
        return 2 * (first + (config.encoder_nlayers - 1) * later)  # two directions
    f = config.ffn_dim
    layer = 4 * d * d + 2 * d * f + f + 9 * d  # attention in/out projections, feed-forward, two layer norms
    return config.encoder_nlayers * layer + d * config.hidden + config.hidden


def check_model_fits(config: Ada2IConfig, where: str | None = None) -> None:
    """Refuse, naming the estimate (and ``where``, the file the config came from), a model whose
    float32 weights need more than the available memory."""
    weights = model_parameters(config)
    try:
        check_fits_in_memory(
            BYTES_PER_WEIGHT * weights, f"this model ({weights:.3g} weights: hidden {config.hidden}, rank {config.rank}, "
            f"ffn_dim {config.ffn_dim}, {config.encoder_nlayers} encoder and {config.mmt_nlayers} AFW layer(s))",
            "check the config's sizes")
    except ValueError as error:
        raise type(error)(f"{where}: {error}" if where else str(error)) from None
