"""FaceFormer's motion decoder: post-norm transformer decoder layers with the periodic causal bias and
the alignment-windowed cross-attention, runnable over a whole sequence or one step at a time with a
key/value cache.

The layers keep ``nn.TransformerDecoderLayer``'s parameters and names (``self_attn``, ``multihead_attn``,
``linear1``, ``linear2``, ``norm1..3``; ReLU, batch_first, post-norm) so FaceFormer's weights load
as they are, but compute attention themselves:
- self-attention reads cached keys/values, so step t costs O(t) instead of re-running the prefix;
- cross-attention only looks at the audio frames the alignment mask allows (``w`` per motion frame),
  which gives the same numbers as the masked softmax over all frames (masked logits are exactly 0
  after the softmax) in O(w) per frame.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from talkface.model.masks import biased_causal_mask


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, L, D) -> (B, H, L, D/H)."""
    b, length, d = x.shape
    return x.view(b, length, num_heads, d // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, L, D/H) -> (B, L, D)."""
    b, h, length, dh = x.shape
    return x.transpose(1, 2).reshape(b, length, h * dh)


def _attend_one(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, p: float) -> torch.Tensor:
    """Attention of one query per head, (B, H, 1, dh) over (B, H, n, dh), with elementwise ops.

    Per decoding step the tensors are tiny: bmm enters the intra-op thread pool on every call, which
    costs milliseconds when the CPUs are shared, while small elementwise ops and reductions run inline.
    """
    scores = (q * k).sum(-1) / math.sqrt(q.shape[-1]) + bias[..., 0, :]  # (B, H, n)
    weights = F.dropout(scores.softmax(-1), p, p > 0)
    return (weights[..., None] * v).sum(-2, keepdim=True)


class KVCache:
    """Keys and values of the positions decoded so far, for one layer.

    Without autograd the cache writes into a preallocated buffer (O(T) copying); when gradients
    are needed it concatenates, so earlier steps' saved tensors are never modified in place.

    Args:
        capacity: the most positions it will hold (a hint for the buffer).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.length = 0
        self._buffered = False

    def extend(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append (B, H, L, dh) keys/values; return all of them so far, (B, H, n, dh) each."""
        step = keys.shape[2]
        if self.keys is None:
            self._buffered = not (torch.is_grad_enabled() and (keys.requires_grad or values.requires_grad))
            if self._buffered:
                shape = (*keys.shape[:2], max(self.capacity, step), keys.shape[3])
                self.keys, self.values = keys.new_empty(shape), values.new_empty(shape)
        if not self._buffered:
            self.keys = keys if self.keys is None else torch.cat([self.keys, keys], 2)
            self.values = values if self.values is None else torch.cat([self.values, values], 2)
            self.length += step
            return self.keys, self.values
        assert self.keys is not None and self.values is not None
        if self.length + step > self.keys.shape[2]:  # grow geometrically past the hint
            extra = (*self.keys.shape[:2], max(self.keys.shape[2], step), self.keys.shape[3])
            self.keys = torch.cat([self.keys, self.keys.new_empty(extra)], 2)
            self.values = torch.cat([self.values, self.values.new_empty(extra)], 2)
        self.keys[:, :, self.length: self.length + step] = keys
        self.values[:, :, self.length: self.length + step] = values
        self.length += step
        return self.keys[:, :, : self.length], self.values[:, :, : self.length]


class DecoderLayer(nn.Module):
    """One ``nn.TransformerDecoderLayer`` (post-norm, ReLU, batch_first) with cached, windowed attention.

    Args:
        dim: D.
        num_heads: H.
        ff_dim: feed-forward width.
        dropout: residual, feed-forward and attention-weight dropout.
    """

    def __init__(self, dim: int, num_heads: int, ff_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        # nn.MultiheadAttention holds the parameters (and their init) under FaceFormer's names.
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(dim, ff_dim)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ff_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.num_heads = num_heads
        self.attn_dropout = dropout

    def memory_keys_values(self, memory: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys and values of the audio features, grouped by motion frame.

        Args:
            memory: (B, w*T, D) audio features.
            width: w, audio frames per motion frame.

        Returns:
            keys, values: (B, H, T, w, D/H) each; frame t's window is ``[:, :, t]``.
        """
        d = memory.shape[2]
        w_in, b_in = self.multihead_attn.in_proj_weight, self.multihead_attn.in_proj_bias
        kv = F.linear(memory, w_in[d:], b_in[d:])  # (B, w*T, 2D)
        b, length, _ = kv.shape
        kv = kv.view(b, length // width, width, 2, self.num_heads, d // self.num_heads)
        kv = kv.permute(3, 0, 4, 1, 2, 5)  # (2, B, H, T, w, dh)
        return kv[0], kv[1]

    def forward(self, x: torch.Tensor, memory_kv: tuple[torch.Tensor, torch.Tensor], bias: torch.Tensor,
                offset: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        """Decode tokens at positions ``offset .. offset + L - 1``.

        Args:
            x: (B, L, D) input tokens.
            memory_kv: from ``memory_keys_values``.
            bias: (1, H, L, n) self-attention bias over all n = offset + L positions.
            offset: position of the first token; earlier positions must be in ``cache``.
            cache: this layer's key/value cache (None for a whole-sequence pass).

        Returns:
            (B, L, D).
        """
        x = self.norm1(x + self.dropout1(self._self_attention(x, bias, cache)))
        x = self.norm2(x + self.dropout2(self._cross_attention(x, memory_kv, offset)))
        return self.norm3(x + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(x))))))

    def _self_attention(self, x: torch.Tensor, bias: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        attn = self.self_attn
        q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (split_heads(t, self.num_heads) for t in (q, k, v))
        if cache is not None:
            k, v = cache.extend(k, v)
        p = self.attn_dropout if self.training else 0.0
        if q.shape[2] == 1:
            out = _attend_one(q, k, v, bias, p if self.training else 0.0)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=p)
        return attn.out_proj(merge_heads(out))

    def _cross_attention(self, x: torch.Tensor, memory_kv: tuple[torch.Tensor, torch.Tensor],
                         offset: int) -> torch.Tensor:
        attn = self.multihead_attn
        d = x.shape[2]
        keys = memory_kv[0][:, :, offset: offset + x.shape[1]]  # (B, H, L, w, dh)
        values = memory_kv[1][:, :, offset: offset + x.shape[1]]
        if values.shape[3] == 1 and not self.training:  # softmax over one key is exactly 1
            return attn.out_proj(merge_heads(values[:, :, :, 0]))
        q = split_heads(F.linear(x, attn.in_proj_weight[:d], attn.in_proj_bias[:d]), self.num_heads)
        scores = torch.einsum("bhld,bhlwd->bhlw", q, keys) / math.sqrt(q.shape[-1])
        weights = F.dropout(scores.softmax(-1), self.attn_dropout, self.training)
        return attn.out_proj(merge_heads(torch.einsum("bhlw,bhlwd->bhld", weights, values)))


class MotionDecoder(nn.Module):
    """A stack of ``DecoderLayer`` sharing the periodic causal bias (FaceFormer: one layer).

    Args:
        dim, num_heads, ff_dim, dropout: per layer.
        num_layers: N.
        period: p of the causal bias.
    """

    def __init__(self, dim: int, num_heads: int, ff_dim: int, num_layers: int, period: int,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(dim, num_heads, ff_dim, dropout) for _ in range(num_layers))
        self.num_heads = num_heads
        self.period = period

    def memory_keys_values(self, memory: torch.Tensor, width: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer cross-attention keys/values of (B, w*T, D) audio features."""
        return [layer.memory_keys_values(memory, width) for layer in self.layers]

    def new_caches(self, capacity: int) -> list[KVCache]:
        """Empty key/value caches, one per layer."""
        return [KVCache(capacity) for _ in self.layers]

    def bias_by_distance(self, num_positions: int, device: torch.device | str | None = None,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(H, n) causal bias as a function of the distance d = i - j >= 0 (the last mask row, reversed).

        Decoding step t uses ``table[:, :t + 1].flip(-1)``, row t of the full mask, without rebuilding it.
        """
        last = biased_causal_mask(self.num_heads, self.period, 1, num_positions, offset=num_positions - 1,
                                  device=device, dtype=dtype)
        return last[:, 0].flip(-1)

    def forward(self, x: torch.Tensor, memory_kv: list[tuple[torch.Tensor, torch.Tensor]], offset: int = 0,
                caches: list[KVCache] | None = None, bias_table: torch.Tensor | None = None) -> torch.Tensor:
        """Run all layers on tokens at positions ``offset ..`` (see ``DecoderLayer.forward``).

        Args:
            bias_table: ``bias_by_distance`` covering offset + L positions, for one-token steps.

        Returns:
            (B, L, D).
        """
        if bias_table is not None and x.shape[1] == 1:
            bias = bias_table[:, : offset + 1].flip(-1)[None, :, None]
        else:
            bias = biased_causal_mask(self.num_heads, self.period, x.shape[1], offset + x.shape[1], offset=offset,
                                      device=x.device, dtype=x.dtype)[None]
        for i, layer in enumerate(self.layers):
            x = layer(x, memory_kv[i], bias, offset, None if caches is None else caches[i])
        return x
