"""FaceFormer's periodic positional encoding (PPE): a sinusoid table of ``period`` rows, repeated.

Fan et al., CVPR 2022, §3.2. FaceFormer tiles the table to a fixed ``max_seq_len`` (600); here the
row of position t is ``t mod period``, so any length works.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoid_table(period: int, dim: int, *, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Transformer sinusoids for positions 0 .. period-1.

    ``table[t, 2k] = sin(t * w_k)``, ``table[t, 2k+1] = cos(t * w_k)``, ``w_k = 10000^(-2k/dim)``.

    Args:
        period: p, rows.
        dim: D, columns (odd D drops the last cosine column).
        device: where to compute it (default: torch's default device).

    Returns:
        (p, D) table.
    """
    position = torch.arange(period, dtype=torch.float32, device=device)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    table = torch.zeros(period, dim, device=device)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)[:, : dim // 2]
    return table.to(dtype)


def periodic_encoding(num_positions: int, period: int, dim: int, *, offset: int = 0) -> torch.Tensor:
    """PPE rows for positions ``offset .. offset + num_positions - 1``.

    Returns:
        (L, D) float32.
    """
    rows = torch.arange(offset, offset + num_positions) % period
    return sinusoid_table(period, dim)[rows]


class PeriodicPositionalEncoding(nn.Module):
    """Adds the periodic encoding to a token sequence, then dropout (as FaceFormer's ``PPE``).

    Args:
        dim: D.
        period: p.
        dropout: probability.
    """

    def __init__(self, dim: int, period: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dim = dim
        self.period = period
        self.dropout = nn.Dropout(dropout)
        # One period only, and not saved: checkpoints stay independent of sequence length. On the CPU even
        # when the model is built on the meta device (load_checkpoint): arange there goes through torch's
        # decompositions, whose first use imports sympy and torch._dynamo (2.5 s of a cold start).
        self.register_buffer("table", sinusoid_table(period, dim, device="cpu"), persistent=False)

    def reset_table(self, device: torch.device | str | None = None) -> None:
        """Recompute the table (after building the module on the meta device to load weights fast)."""
        self.table = sinusoid_table(self.period, self.dim).to(device)

    def forward(self, tokens: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Encode positions ``offset ..`` of ``tokens``.

        Args:
            tokens: (B, L, D).
            offset: position of the first token (the decoding step when decoding incrementally).

        Returns:
            (B, L, D).
        """
        rows = torch.arange(offset, offset + tokens.shape[1], device=tokens.device) % self.period
        return self.dropout(tokens + self.table.to(tokens.dtype)[rows])
