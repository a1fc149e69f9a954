"""The plain-torch wav2vec 2.0 (inference) against transformers' Wav2Vec2Model on random configs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import Wav2Vec2Config, Wav2Vec2Model

from talkface.config import ModelConfig
from talkface.model import TalkFaceModel, tiny_encoder_config
from talkface.model.checkpoint import load_checkpoint, save_checkpoint
from talkface.model.wav2vec2 import Wav2Vec2, unsupported

VARIANTS = [
    {},  # wav2vec2-base's layout: group norm in the first CNN layer, post-norm transformer
    {"conv_bias": True},
    {"feat_extract_norm": "layer", "do_stable_layer_norm": True, "conv_bias": True},  # wav2vec2-large's layout
    {"feat_extract_norm": "layer", "do_stable_layer_norm": False},
    {"feat_extract_norm": "group", "do_stable_layer_norm": True, "num_conv_pos_embeddings": 15,
     "hidden_act": "relu", "mask_time_prob": 0.0},  # odd positional kernel, no masked_spec_embed
]


def _pair(overrides: dict, seed: int = 0) -> tuple[Wav2Vec2Model, Wav2Vec2]:
    torch.manual_seed(seed)
    config = tiny_encoder_config(**overrides)
    reference = Wav2Vec2Model(Wav2Vec2Config(**config)).eval()
    with torch.no_grad():  # random affine norms and biases, so that no term hides behind an init of 0 or 1
        for name, p in reference.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    with torch.device("meta"):
        light = Wav2Vec2(config)
    light.load_state_dict(reference.state_dict(), strict=True, assign=True)
    return reference, light.eval()


@pytest.mark.parametrize("overrides", VARIANTS)
def test_same_numbers_as_transformers(overrides):
    reference, light = _pair(overrides)
    audio = torch.randn(2, 5000)
    with torch.no_grad():
        cnn_ref, cnn = reference.feature_extractor(audio), light.feature_extractor(audio)
        torch.testing.assert_close(cnn, cnn_ref, rtol=0, atol=1e-6)
        features = cnn_ref.transpose(1, 2)
        proj_ref, proj = reference.feature_projection(features)[0], light.feature_projection(features)[0]
        torch.testing.assert_close(proj, proj_ref, rtol=0, atol=1e-6)
        out_ref = reference.encoder(proj_ref.clone()).last_hidden_state
        torch.testing.assert_close(light.encoder(proj_ref.clone()).last_hidden_state, out_ref, rtol=0, atol=1e-5)
        # a padded batch: padding zeroed and masked out of attention, as transformers does it
        mask = torch.arange(proj_ref.shape[1])[None] < torch.tensor([proj_ref.shape[1], 7])[:, None]
        padded_ref = reference.encoder(proj_ref.clone(), attention_mask=mask).last_hidden_state
        padded = light.encoder(proj_ref.clone(), attention_mask=mask).last_hidden_state
        torch.testing.assert_close(padded[mask], padded_ref[mask], rtol=0, atol=1e-5)


def test_unsupported_configs_are_named():
    assert unsupported(tiny_encoder_config()) is None
    assert "hidden_act" in unsupported({**tiny_encoder_config(), "hidden_act": "gelu_fast"})
    assert "adapter" in unsupported({**tiny_encoder_config(), "add_adapter": True})
    with pytest.raises(ValueError, match="feat_extract_norm"):
        Wav2Vec2({**tiny_encoder_config(), "feat_extract_norm": "batch"})


@pytest.mark.parametrize("k,fps,overrides", [(0, 30.0, {}), (2, 25.0, {"feat_extract_norm": "layer",
                                                                         "do_stable_layer_norm": True})])
def test_load_checkpoint_animates_as_the_transformers_model(tmp_path, k, fps, overrides):
    """The fast-loading path (default) and transformers' model give the same animation, to 1e-6 m."""
    torch.manual_seed(1)
    config = ModelConfig(num_vertices=12, feature_dim=16, period=int(fps) if k else 3, num_heads=4, num_layers=2,
                         fps=fps, audio_frames_per_motion_frame=k, speakers=("a", "b"))
    model = TalkFaceModel(config, tiny_encoder_config(**overrides))
    torch.nn.init.normal_(model.motion_head.weight, std=0.05)
    save_checkpoint(tmp_path / "m.safetensors", model)
    fast, _ = load_checkpoint(tmp_path / "m.safetensors")
    slow, _ = load_checkpoint(tmp_path / "m.safetensors", encoder_implementation="transformers")
    assert type(fast.audio_encoder.wav2vec2) is Wav2Vec2 and type(slow.audio_encoder.wav2vec2) is Wav2Vec2Model
    assert json.dumps(fast.encoder_config, sort_keys=True) == json.dumps(slow.encoder_config, sort_keys=True)
    t = np.arange(24000) / 16000
    audio = torch.from_numpy((0.3 * np.sin(2 * np.pi * 180 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32))
    template, style = torch.randn(12, 3) * 0.1, torch.tensor([0.3, 0.7])
    a, b = fast.generate(audio, template, style), slow.generate(audio, template, style)
    assert a.shape == b.shape and (a - b).abs().max() <= 1e-6
    assert (a - template).abs().max() > 1e-3  # the comparison sees the motion, not only the template


def test_inference_imports_no_transformers(tmp_path):
    """Loading a checkpoint and animating needs no transformers modeling code (seconds of import)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    torch.manual_seed(0)
    config = ModelConfig(num_vertices=12, feature_dim=16, period=3, num_heads=4, num_layers=1, speakers=("a",))
    save_checkpoint(tmp_path / "m.safetensors", TalkFaceModel(config, tiny_encoder_config()))
    code = ("import sys, torch\nfrom talkface.model.checkpoint import load_checkpoint\n"
            "m, _ = load_checkpoint(sys.argv[1])\nm.generate(torch.randn(8000) * 0.1, torch.zeros(12, 3), "
            "torch.ones(1))\nheavy = [n for n in sys.modules if n.startswith('transformers')]\n"
            "assert not heavy, heavy[:5]\nprint('light')")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.safetensors")], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0 and "light" in proc.stdout, proc.stdout + proc.stderr
