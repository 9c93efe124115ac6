"""How much memory a corpus or a model needs, and refusing one that would not fit before it is built
(a model's weights counted from its :class:`~ada2i_fast.config.Ada2IConfig` alone)."""

from __future__ import annotations

from pathlib import Path

from .config import Ada2IConfig

MEMINFO = Path("/proc/meminfo")
FALLBACK_MEMORY = 8 * 2**30  # what a corpus may take where MEMINFO does not say what is available
BYTES_PER_WEIGHT = 4  # float32


class TooLargeForMemory(ValueError):
    """A corpus or a model would not fit in the memory this machine has available."""


def available_memory() -> int:
    """Bytes this machine can still allocate: MemAvailable of :data:`MEMINFO`, else :data:`FALLBACK_MEMORY`."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the kernel writes kB
    except (OSError, ValueError, IndexError):
        pass
    return FALLBACK_MEMORY


def corpus_bytes(utterances: float, feature_dims: int) -> float:
    """About what a corpus of ``utterances`` holds: float32 features and int64 labels and speakers."""
    return utterances * (4 * feature_dims + 16)


def check_fits_in_memory(needed: float, what: str, advice: str) -> None:
    """Refuse, saying ``advice``, what needs more than the available memory (``what`` names it)."""
    available = available_memory()
    if needed > available:
        raise TooLargeForMemory(f"{what} needs about {shown_bytes(needed)}; this machine has "
                                f"{shown_bytes(available)} available; {advice}")


def shown_bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if count < 1000 or unit == "PB":
            return f"{count:.3g} {unit}"
        count /= 1000


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
    except TooLargeForMemory as error:
        raise TooLargeForMemory(f"{where}: {error}" if where else str(error)) from None
