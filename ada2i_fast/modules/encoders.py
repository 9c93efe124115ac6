"""Per-modality context encoders (SPEC §2): a post-norm transformer or a packed bidirectional LSTM."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..config import Ada2IConfig
from ..kernels.attention import attention
from ..kernels.dropout import dropout
from .batch import Batch
from .dropout import Dropout
from .rows import padded_grid, real_rows


ROW_BUCKET = 32


def attention_heads(dim: int) -> int:
    """The first head count in 5..14 that divides ``dim``, else 1 (the public code's rule)."""
    return next((h for h in range(5, 15) if dim % h == 0), 1)


class TransformerEncoder(nn.Module):
    """Post-norm transformer layers over the dialogue (no positional encoding), then Linear(d -> hidden).

    With padding masked (method semantics) a padded row never reaches a real one, so every
    per-utterance op (projections, feed-forward, norms, ``lin_out``) runs on the real utterances
    only, packed [N, d]; attention alone runs per dialogue on the padded grid. Padded rows of the
    output are 0. The public code attends to padded rows too, so there the whole grid is computed.
    """

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
        layer.dropout, layer.dropout1, layer.dropout2 = (Dropout(config.drop_rate) for _ in range(3))
        self.transformer_encoder = nn.TransformerEncoder(
            layer, num_layers=config.encoder_nlayers, enable_nested_tensor=False
        )
        self.lin_out = nn.Linear(input_dim, config.hidden)
        self.mask_padding = config.semantics.mask_padding

    def forward(self, x: Tensor, mask: Tensor, lengths: Tensor, flat_index: Tensor) -> Tensor:
        if not self.mask_padding:
            return self.lin_out(self.transformer_encoder(x))
        b, t, d = x.shape
        rows = x.reshape(b * t, d).index_select(0, flat_index)
        if torch.is_autocast_enabled(rows.device.type):
            # The residual stream in the autocast dtype (no casts at every Linear), and the rows rounded up
            # to a multiple of ROW_BUCKET with zero rows no real row reads: oneDNN builds a bf16 kernel per
            # matrix shape, and every batch brings other row counts.
            rows = _rows_of(rows.to(torch.get_autocast_dtype(rows.device.type)),
                            -(-rows.shape[0] // ROW_BUCKET) * ROW_BUCKET)
        for layer in self.transformer_encoder.layers:
            rows = _packed_post_norm_layer(layer, rows, mask, flat_index)
        return padded_grid(self.lin_out(rows)[: flat_index.numel()], flat_index, b * t).view(b, t, -1)


def _packed_post_norm_layer(layer: nn.TransformerEncoderLayer, rows: Tensor, mask: Tensor, flat_index: Tensor) -> Tensor:
    """``layer`` (post-norm, batch-first, ReLU) on the real rows [N, d] of the [B, T] grid ``mask``,
    padded keys masked; each dropout fused with the ReLU before it or the residual add after it."""
    b, t = mask.shape
    attn, training = layer.self_attn, layer.training
    d, heads, n = attn.embed_dim, attn.num_heads, flat_index.numel()
    qkv = F.linear(rows, attn.in_proj_weight, attn.in_proj_bias).view(-1, 3, heads, d // heads).permute(1, 2, 0, 3)
    q, k, v = padded_grid(qkv[:, :, :n], flat_index, b * t, dim=2).view(3, heads, b, t, d // heads)  # head-major
    context = attention(q, k, v, mask[None, :, None, :], attn.dropout if training else 0.0)  # [heads, B, T, d_head]
    context = real_rows(context.view(heads, b * t, d // heads), flat_index, 1).transpose(0, 1).reshape(-1, d)
    context = _rows_of(context, rows.shape[0])
    rows = layer.norm1(dropout(attn.out_proj(context), layer.dropout1.p, training=training, residual=rows))
    hidden = dropout(layer.linear1(rows), layer.dropout.p, training=training, relu=True)
    return layer.norm2(dropout(layer.linear2(hidden), layer.dropout2.p, training=training, residual=rows))


def _rows_of(rows: Tensor, count: int) -> Tensor:
    """``rows`` [N, d] followed by zero rows up to ``count``."""
    return rows if rows.shape[0] == count else F.pad(rows, (0, 0, 0, count - rows.shape[0]))


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

    def forward(self, x: Tensor, mask: Tensor, lengths: Tensor, flat_index: Tensor) -> Tensor:
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]


def build_encoder(input_dim: int, config: Ada2IConfig) -> nn.Module:
    return {"transformer": TransformerEncoder, "lstm": LSTMEncoder}[config.encoder](input_dim, config)


def encode_all(encoders: nn.ModuleDict, batch: Batch) -> Tensor:
    """Stack every modality's encoding into [M, B, T, hidden] in the encoders' order."""
    layout = batch.mask, batch.lengths, batch.flat_index
    return torch.stack([encoder(batch.features[m], *layout) for m, encoder in encoders.items()])
