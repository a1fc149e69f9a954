"""wav2vec 2.0 in plain torch, for inference: loads transformers' ``Wav2Vec2Model`` state dict as it is.

Baevski et al., "wav2vec 2.0", NeurIPS 2020. Importing transformers' modeling code costs seconds (4.9 s
of the 8.2 s an ``animate`` of one second took, issue #28); a checkpoint only needs the forward pass.
This module re-implements it from the architecture: a CNN feature encoder (group norm over time in
the first layer, or a layer norm per frame in every layer), a feature projection (layer norm +
linear), a grouped, weight-normalised positional convolution, and post-norm (base) or pre-norm
("stable", large) transformer layers. Module and parameter names follow transformers' so that the
same ``state_dict`` loads with ``strict=True`` and ``talkface.inference.stream`` reaches the same
sub-modules. Training, hub loading and FaceFormer import keep transformers' model
(``talkface.model.audio_encoder``); ``tests/test_wav2vec2.py`` pins both to the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# facebook/wav2vec2-base-960h's config.json (the encoder FaceFormer fine-tunes), written out so that
# importing a FaceFormer checkpoint or benchmarking needs no hub. Only feat_proj_dropout differs from
# Wav2Vec2Config()'s defaults, so these are also the defaults of a key a config leaves out.
WAV2VEC2_BASE_960H: dict[str, Any] = {
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "hidden_act": "gelu", "hidden_dropout": 0.1, "activation_dropout": 0.1, "attention_dropout": 0.1,
    "feat_proj_dropout": 0.1, "final_dropout": 0.1, "layerdrop": 0.1, "layer_norm_eps": 1e-5,
    "initializer_range": 0.02, "feat_extract_norm": "group", "feat_extract_activation": "gelu",
    "conv_dim": [512] * 7, "conv_stride": [5, 2, 2, 2, 2, 2, 2], "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_bias": False, "num_feat_extract_layers": 7, "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16, "do_stable_layer_norm": False, "apply_spec_augment": True,
    "mask_time_prob": 0.05, "mask_time_length": 10, "mask_time_min_masks": 2, "mask_feature_prob": 0.0,
    "mask_feature_length": 10, "mask_feature_min_masks": 0, "vocab_size": 32, "pad_token_id": 0,
    "bos_token_id": 1, "eos_token_id": 2,
}
_ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu, "swish": F.silu}


class EncoderSettings:
    """A ``Wav2Vec2Config.to_dict()`` read as attributes (``config.hidden_size``), without transformers.

    Keys the dict leaves out take wav2vec2-base's values; ``to_dict()`` gives the dict back as given.
    """

    def __init__(self, values: dict[str, Any]) -> None:
        self._given = dict(values)
        self._values = {**WAV2VEC2_BASE_960H, "add_adapter": False, **values}

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def to_dict(self) -> dict[str, Any]:
        return dict(self._given)


def unsupported(encoder_config: dict[str, Any]) -> str | None:
    """Why this module cannot run ``encoder_config`` (then transformers' model must), or None."""
    c = EncoderSettings(encoder_config)
    if c.feat_extract_norm not in ("group", "layer"):
        return f"feat_extract_norm {c.feat_extract_norm!r}"
    for key in ("hidden_act", "feat_extract_activation"):
        if getattr(c, key) not in _ACTIVATIONS:
            return f"{key} {getattr(c, key)!r}"
    if c.add_adapter or encoder_config.get("adapter_attn_dim") is not None:
        return "an adapter"
    if c.hidden_size % c.num_attention_heads:
        return "hidden_size not divisible by num_attention_heads"
    return None


@dataclass
class EncoderOutput:
    """What ``Wav2Vec2Encoder`` returns, as transformers names it."""

    last_hidden_state: torch.Tensor  # (B, L, H)


# ------------------------------------------------------------------------------------ CNN


class ConvLayer(nn.Module):
    """One CNN layer: conv, then (group norm over time | layer norm per frame | nothing), then activation."""

    def __init__(self, c: EncoderSettings, i: int, norm: str | None) -> None:
        super().__init__()
        channels_in = c.conv_dim[i - 1] if i > 0 else 1
        channels = c.conv_dim[i]
        self.conv = nn.Conv1d(channels_in, channels, c.conv_kernel[i], stride=c.conv_stride[i], bias=c.conv_bias)
        self.norm_kind = norm
        if norm == "group":  # one group per channel: a per-channel norm over time (the clip)
            self.layer_norm: nn.Module | None = nn.GroupNorm(channels, channels, affine=True)
        elif norm == "layer":
            self.layer_norm = nn.LayerNorm(channels, elementwise_affine=True)
        self.activation = _ACTIVATIONS[c.feat_extract_activation]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, C_in, S) -> (B, C, S')."""
        hidden = self.conv(hidden)
        if self.norm_kind == "group":
            hidden = self.layer_norm(hidden)
        elif self.norm_kind == "layer":
            hidden = self.layer_norm(hidden.transpose(-2, -1)).transpose(-2, -1)
        return self.activation(hidden)


class FeatureEncoder(nn.Module):
    """The CNN: (B, S) raw samples -> (B, C, A) features at 50 Hz."""

    def __init__(self, c: EncoderSettings) -> None:
        super().__init__()
        group = c.feat_extract_norm == "group"
        self.conv_layers = nn.ModuleList(
            ConvLayer(c, i, ("group" if i == 0 else None) if group else "layer") for i in range(len(c.conv_dim)))

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        hidden = samples[:, None]
        for layer in self.conv_layers:
            hidden = layer(hidden)
        return hidden


class FeatureProjection(nn.Module):
    """(B, A, C) -> ((B, A, H) projected, (B, A, C) normalised), as transformers returns both."""

    def __init__(self, c: EncoderSettings) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(c.conv_dim[-1], eps=c.layer_norm_eps)
        self.projection = nn.Linear(c.conv_dim[-1], c.hidden_size)
        self.dropout = nn.Dropout(c.feat_proj_dropout)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        normed = self.layer_norm(features)
        return self.dropout(self.projection(normed)), normed


# ------------------------------------------------------------------------------------ transformer


class _WeightNormHolder(nn.Module):
    """``original0`` (g, (1, 1, K)) and ``original1`` (v), named as torch's weight-norm parametrization."""

    def __init__(self, g_shape: tuple[int, ...], v_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.original0 = nn.Parameter(torch.empty(g_shape))
        self.original1 = nn.Parameter(torch.empty(v_shape))


class WeightNormConv(nn.Module):
    """A grouped Conv1d whose weight is g * v / ||v|| (norm over all but the kernel axis, dim 2)."""

    def __init__(self, hidden: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.padding, self.groups = kernel // 2, groups
        self.parametrizations = nn.ModuleDict({"weight": _WeightNormHolder((1, 1, kernel),
                                                                           (hidden, hidden // groups, kernel))})
        self.bias = nn.Parameter(torch.empty(hidden))

    @property
    def weight(self) -> torch.Tensor:
        p = self.parametrizations["weight"]
        return torch._weight_norm(p.original1, p.original0, 2)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.conv1d(hidden, self.weight, self.bias, padding=self.padding, groups=self.groups)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        for old, new in (("weight_g", "parametrizations.weight.original0"),
                         ("weight_v", "parametrizations.weight.original1")):  # torch < 2.1's weight_norm names
            if prefix + old in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)
        super()._load_from_state_dict(state_dict, prefix, *args)


class PositionalConvEmbedding(nn.Module):
    """(B, L, H) -> (B, L, H) relative positions from a wide grouped convolution ("same" length)."""

    def __init__(self, c: EncoderSettings) -> None:
        super().__init__()
        self.conv = WeightNormConv(c.hidden_size, c.num_conv_pos_embeddings, c.num_conv_pos_embedding_groups)
        self.remove = 1 if c.num_conv_pos_embeddings % 2 == 0 else 0  # an even kernel yields one frame too many
        self.activation = _ACTIVATIONS[c.feat_extract_activation]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out = self.conv(hidden.transpose(1, 2))
        if self.remove:
            out = out[:, :, : -self.remove]
        return self.activation(out).transpose(1, 2)


class Attention(nn.Module):
    """Bidirectional multi-head self-attention; ``key_mask`` (B, L) bool, True = a real frame."""

    def __init__(self, c: EncoderSettings) -> None:
        super().__init__()
        hidden = c.hidden_size
        self.num_heads, self.head_dim = c.num_attention_heads, hidden // c.num_attention_heads
        self.scaling = self.head_dim ** -0.5
        self.dropout = c.attention_dropout
        # transformers' order, so that state_dict() lists the tensors in the same order
        self.k_proj, self.v_proj = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.q_proj, self.out_proj = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = hidden.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, heads, L, dh)

        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(heads(self.q_proj(hidden)), heads(self.k_proj(hidden)),
                                             heads(self.v_proj(hidden)), attn_mask=mask, scale=self.scaling,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1))


class FeedForward(nn.Module):
    def __init__(self, c: EncoderSettings) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(c.hidden_size, c.intermediate_size)
        self.intermediate_dropout = nn.Dropout(c.activation_dropout)
        self.output_dense = nn.Linear(c.intermediate_size, c.hidden_size)
        self.output_dropout = nn.Dropout(c.hidden_dropout)
        self.activation = _ACTIVATIONS[c.hidden_act]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.intermediate_dropout(self.activation(self.intermediate_dense(hidden)))
        return self.output_dropout(self.output_dense(hidden))


class EncoderLayer(nn.Module):
    """A transformer layer: post-norm (wav2vec2-base) or pre-norm (``stable``, wav2vec2-large)."""

    def __init__(self, c: EncoderSettings, stable: bool) -> None:
        super().__init__()
        self.stable = stable
        self.attention = Attention(c)
        self.dropout = nn.Dropout(c.hidden_dropout)
        self.layer_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.feed_forward = FeedForward(c)
        self.final_layer_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.stable:
            hidden = hidden + self.dropout(self.attention(self.layer_norm(hidden), key_mask))
            return hidden + self.feed_forward(self.final_layer_norm(hidden))
        hidden = self.layer_norm(hidden + self.dropout(self.attention(hidden, key_mask)))
        return self.final_layer_norm(hidden + self.feed_forward(hidden))


class Encoder(nn.Module):
    """Positional convolution + transformer layers; ``encoder(hidden, attention_mask).last_hidden_state``."""

    def __init__(self, c: EncoderSettings) -> None:
        super().__init__()
        self.config = c
        self.stable = bool(c.do_stable_layer_norm)
        self.pos_conv_embed = PositionalConvEmbedding(c)
        self.layer_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout)
        self.layers = nn.ModuleList(EncoderLayer(c, self.stable) for _ in range(c.num_hidden_layers))

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> EncoderOutput:
        """(B, L, H) projected features; ``attention_mask`` (B, L) bool, True = a real frame (padding is zeroed)."""
        if attention_mask is not None:
            attention_mask = attention_mask.bool()
            hidden = torch.where(attention_mask[..., None], hidden, hidden.new_zeros(()))
        hidden = hidden + self.pos_conv_embed(hidden)
        if not self.stable:
            hidden = self.layer_norm(hidden)
        hidden = self.dropout(hidden)
        for layer in self.layers:
            if self.training and self.config.layerdrop > 0 and float(torch.rand([])) < self.config.layerdrop:
                continue
            hidden = layer(hidden, attention_mask)
        if self.stable:
            hidden = self.layer_norm(hidden)
        return EncoderOutput(hidden)


class Wav2Vec2(nn.Module):
    """The parts of transformers' ``Wav2Vec2Model`` talkface runs, with its parameter names.

    Args:
        encoder_config: ``Wav2Vec2Config.to_dict()``; parameters start uninitialised (``torch.empty``):
            this model is for loading a checkpoint into (build it on the meta device, then
            ``load_state_dict(..., assign=True)``).

    Raises:
        ValueError: a config this module does not implement (see ``unsupported``).
    """

    def __init__(self, encoder_config: dict[str, Any]) -> None:
        super().__init__()
        reason = unsupported(encoder_config)
        if reason is not None:
            raise ValueError(f"the plain-torch wav2vec 2.0 does not implement {reason}")
        self.config = c = EncoderSettings(encoder_config)
        self.feature_extractor = FeatureEncoder(c)
        self.feature_projection = FeatureProjection(c)
        if c.mask_time_prob > 0 or c.mask_feature_prob > 0:
            self.masked_spec_embed = nn.Parameter(torch.empty(c.hidden_size))
        self.encoder = Encoder(c)

    def freeze_feature_encoder(self) -> None:
        for p in self.feature_extractor.parameters():
            p.requires_grad = False

