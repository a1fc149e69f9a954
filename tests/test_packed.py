"""Prepacked linear layers (the streamer's fast path) against plain ``F.linear``, and the streamer's
positional embedding of the last frames against the encoder's own module."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from talkface.config import ModelConfig
from talkface.inference import packed
from talkface.inference.packed import PackedLinear, packed_copy, packing_available
from talkface.inference.stream import StreamConfig, Streamer
from talkface.model import TalkFaceModel

needs_packing = pytest.mark.skipif(not packing_available(), reason="this torch build has no oneDNN linear packing")


@needs_packing
@pytest.mark.parametrize("shape", [(7,), (5, 7), (1, 6, 7), (2, 3, 7), (1, 0, 7), (40, 7)])
@pytest.mark.parametrize("bias", [True, False])
def test_packed_linear_equals_f_linear(shape, bias):
    torch.manual_seed(0)
    linear = nn.Linear(7, 11, bias=bias)
    x = torch.randn(*shape)
    with torch.no_grad():
        want, got = linear(x), PackedLinear(linear)(x)
    assert got.shape == want.shape
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)


@needs_packing
def test_packed_linear_follows_weight_changes():
    """An in-place update (optimiser step, load_state_dict) or a new weight tensor is repacked, never stale."""
    torch.manual_seed(0)
    linear = nn.Linear(8, 4)
    fast, x = PackedLinear(linear), torch.randn(3, 8)
    with torch.no_grad():
        before = fast(x)
        linear.weight.add_(1.0)
        assert torch.allclose(fast(x), linear(x), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(fast(x), before)
        linear.load_state_dict({"weight": torch.randn(4, 8), "bias": torch.zeros(4)})
        assert torch.allclose(fast(x), linear(x), rtol=1e-5, atol=1e-6)
        linear.weight = nn.Parameter(torch.randn(4, 8))
        assert torch.allclose(fast(x), linear(x), rtol=1e-5, atol=1e-6)


def test_packed_linear_falls_back_where_it_cannot_pack():
    """float64 inputs and inputs that need gradients take F.linear (gradients reach the weights)."""
    torch.manual_seed(0)
    linear = nn.Linear(6, 3)
    fast = PackedLinear(linear)
    x = torch.randn(2, 6, requires_grad=True)
    fast(x).sum().backward()
    assert linear.weight.grad is not None and x.grad is not None
    double = nn.Linear(6, 3).double()
    xd = torch.randn(2, 6, dtype=torch.float64)
    assert torch.equal(PackedLinear(double)(xd), F.linear(xd, double.weight, double.bias))


def test_packed_copy_shares_parameters_and_leaves_the_module_alone():
    torch.manual_seed(0)
    block = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Sequential(nn.Linear(8, 4)))
    copy = packed_copy(block)
    assert isinstance(block[0], nn.Linear) and isinstance(block[2][0], nn.Linear)  # the original is untouched
    if packing_available():
        assert isinstance(copy[0], PackedLinear) and isinstance(copy[2][0], PackedLinear)
        assert copy[0].linear.weight is block[0].weight
    x = torch.randn(3, 4)
    with torch.no_grad():
        assert torch.allclose(copy(x), block(x), rtol=1e-5, atol=1e-6)


def test_packed_copy_is_the_module_itself_without_packing(monkeypatch):
    monkeypatch.setattr(packed, "packing_available", lambda: False)
    block = nn.Sequential(nn.Linear(4, 4))
    assert packed_copy(block) is block


def _model(tiny_encoder_config, implementation: str, seed: int = 0) -> TalkFaceModel:
    torch.manual_seed(seed)
    config = ModelConfig(num_vertices=10, feature_dim=16, period=3, num_heads=4, num_layers=2, fps=30.0,
                         speakers=("a", "b"))
    model = TalkFaceModel(config, tiny_encoder_config, encoder_implementation=implementation).eval()
    if implementation == "torch":  # the plain-torch encoder is built uninitialised, for a checkpoint to fill
        source = TalkFaceModel(config, tiny_encoder_config).eval()
        model.load_state_dict(source.state_dict())
    torch.nn.init.normal_(model.motion_head.weight, std=0.05)
    return model


@pytest.mark.parametrize("implementation", ["transformers", "torch"])
def test_positions_of_the_last_frames_equal_the_encoders_module(tiny_encoder_config, implementation):
    """The streamer computes the positional conv only for a pass's frames: equal to the module's output for
    them, whether the context is longer than the kernel's reach or shorter (the stream's first passes)."""
    model = _model(tiny_encoder_config, implementation)
    streamer = Streamer(model, np.zeros((10, 3), np.float32), np.array([1.0, 0.0], np.float32))
    module = model.audio_encoder.wav2vec2.encoder.pos_conv_embed
    hidden = model.audio_encoder.wav2vec2.config.hidden_size
    kernel = model.audio_encoder.wav2vec2.config.num_conv_pos_embeddings
    torch.manual_seed(1)
    for length, n in [(3 * kernel, 5), (kernel // 2 + 4, 4), (6, 6), (5, 2), (1, 1)]:
        context = torch.randn(1, length, hidden)
        with torch.no_grad():
            want = module(context)[:, -n:]
            got = streamer._positions(context, n)
        assert got.shape == want.shape
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5), (length, n)


def test_streams_with_and_without_packing_agree(tiny_encoder_config, monkeypatch):
    """The packed path changes only float rounding: the same frames as the plain layers, to 1e-5 m."""
    model = _model(tiny_encoder_config, "torch")
    rng = np.random.default_rng(0)
    audio = (0.3 * np.sin(np.arange(32000) * 0.07) + 0.02 * rng.standard_normal(32000)).astype(np.float32)
    template = rng.normal(scale=0.1, size=(10, 3)).astype(np.float32)
    config = StreamConfig(lookahead_ms=150, hop_ms=60)

    def run() -> np.ndarray:
        streamer = Streamer(model, template, np.array([0.3, 0.7], np.float32), config)
        out = [streamer.push(audio[i: i + 1000]) for i in range(0, audio.size, 1000)]
        return np.concatenate([*out, streamer.finish()])

    fast = run()
    monkeypatch.setattr(packed, "packing_available", lambda: False)
    plain = run()
    assert fast.shape == plain.shape and fast.shape[0] == model.num_frames_for(audio.size)
    assert np.abs(fast - plain).max() < 1e-5
    assert np.abs(plain - template).max() > 1e-3  # the comparison sees motion, not the template alone
