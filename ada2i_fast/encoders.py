"""Per-modality context encoders (SPEC §2): a post-norm transformer or a packed bidirectional LSTM."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .config import Ada2IConfig
from .dropout import UniformDropout


def attention_heads(dim: int) -> int:
    """The first head count in 5..14 that divides ``dim``, else 1 (the public code's rule)."""
    return next((h for h in range(5, 15) if dim % h == 0), 1)


class TransformerEncoder(nn.Module):
    """Post-norm transformer layers over the dialogue (no positional encoding), then Linear(d -> hidden)."""

    def __init__(self, input_dim: int, config: Ada2IConfig) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            d_model=input_dim,
            nhead=attention_heads(input_dim),
            dim_feedforward=config.ffn_dim,
            dropout=config.drop_rate,
            batch_first=True,
        )
        # The residual and feed-forward dropouts; attention-weight dropout stays inside self_attn.
        layer.dropout, layer.dropout1, layer.dropout2 = (UniformDropout(config.drop_rate) for _ in range(3))
        self.transformer_encoder = nn.TransformerEncoder(
            layer, num_layers=config.encoder_nlayers, enable_nested_tensor=False
        )
        self.lin_out = nn.Linear(input_dim, config.hidden)
        self.mask_padding = config.semantics.mask_padding

    def forward(self, x: Tensor, mask: Tensor, lengths: Tensor) -> Tensor:
        padding = ~mask if self.mask_padding else None
        return self.lin_out(self.transformer_encoder(x, src_key_padding_mask=padding))


class LSTMEncoder(nn.Module):
    """Bidirectional LSTM with hidden/2 units per direction, packed by dialogue length."""

    def __init__(self, input_dim: int, config: Ada2IConfig) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            input_dim,
            config.hidden // 2,
            num_layers=config.encoder_nlayers,
            dropout=config.drop_rate if config.encoder_nlayers > 1 else 0.0,
            bidirectional=True,
            batch_first=True,
        )

    def forward(self, x: Tensor, mask: Tensor, lengths: Tensor) -> Tensor:
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]


def build_encoder(input_dim: int, config: Ada2IConfig) -> nn.Module:
    return {"transformer": TransformerEncoder, "lstm": LSTMEncoder}[config.encoder](input_dim, config)


def encode_all(encoders: nn.ModuleDict, features: dict[str, Tensor], mask: Tensor, lengths: Tensor) -> Tensor:
    """Stack every modality's encoding into [M, B, T, hidden] in the encoders' order."""
    return torch.stack([encoder(features[m], mask, lengths) for m, encoder in encoders.items()])
