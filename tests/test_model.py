import dataclasses
import math

import pytest
import torch
from torch import nn

from talkface.errors import AudioError, ConfigError, TemplateError
from talkface.model import TalkFaceModel, alignment_mask, biased_causal_mask


def make_model(config, encoder_config, *, seed=0, head_std=0.05):
    torch.manual_seed(seed)
    model = TalkFaceModel(config, encoder_config).eval()
    if head_std:  # the real head starts at zero; random values make the outputs depend on everything
        nn.init.normal_(model.motion_head.weight, std=head_std)
        nn.init.normal_(model.motion_head.bias, std=head_std)
    return model


def biwi_like(config):
    return dataclasses.replace(config, fps=25.0, period=4, audio_frames_per_motion_frame=2)


def speech_like(seconds, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * 16000)
    t = torch.arange(n) / 16000
    voiced = 0.3 * torch.sin(2 * torch.pi * 150 * t) * torch.sin(2 * torch.pi * 4 * t)
    return voiced + 0.05 * torch.randn(n, generator=g)


def batch_of(clips, fps, num_vertices, num_speakers, seed=0):
    g = torch.Generator().manual_seed(seed)
    audio = torch.zeros(len(clips), max(len(c) for c in clips))
    for i, c in enumerate(clips):
        audio[i, : len(c)] = c
    lengths = torch.tensor([len(c) for c in clips])
    frames = torch.tensor([int(len(c) / 16000 * fps) for c in clips])
    template = torch.randn(len(clips), num_vertices, 3, generator=g)
    style = torch.eye(num_speakers)[torch.arange(len(clips)) % num_speakers]
    return audio, lengths, template, style, frames


def test_zero_init_head_returns_template(tiny_model_config, tiny_encoder_config):
    model = make_model(tiny_model_config, tiny_encoder_config, head_std=0)
    audio, lengths, template, style, frames = batch_of([speech_like(0.6)], 30, 10, 3)
    out = model(audio, lengths, template, style, frames)
    assert out.vertices.shape == (1, 18, 10, 3) and out.frame_mask.all()
    assert torch.equal(out.vertices, template[:, None].expand_as(out.vertices))
    teacher = template[:, None].repeat(1, 18, 1, 1) + 0.1
    assert torch.equal(model(audio, lengths, template, style, frames, teacher=teacher).offsets,
                       torch.zeros(1, 18, 10, 3))
    assert torch.equal(model.generate(audio[0], template[0], style[0]), template[0].expand(17, 10, 3))


def test_default_frame_count_is_faceformers(tiny_model_config, tiny_encoder_config):
    model = make_model(tiny_model_config, tiny_encoder_config)
    # 1 s -> 49 CNN frames -> int(49 / 50 * 30) = 29 frames (VOCASET); 49 // 2 = 24 (BIWI)
    assert model.generate(speech_like(1.0), torch.zeros(10, 3), torch.eye(3)[0]).shape == (29, 10, 3)
    biwi = make_model(biwi_like(tiny_model_config), tiny_encoder_config)
    assert biwi.generate(speech_like(1.0), torch.zeros(10, 3), torch.eye(3)[0]).shape == (24, 10, 3)
    assert model.generate(speech_like(1.0), torch.zeros(10, 3), torch.eye(3)[0], num_frames=31).shape[0] == 31


@pytest.mark.parametrize("fps", [30.0, 25.0, 60.0])
def test_frame_count_truncates_like_faceformer(tiny_model_config, tiny_encoder_config, fps):
    """FaceFormer's frame count int(A / 50 * fps), A = (S - 400) // 320 + 1 CNN frames (wav2vec 2.0's
    400-sample receptive field, 320-sample hop), checked where truncating and rounding A*fps/50 differ."""
    model = make_model(dataclasses.replace(tiny_model_config, fps=fps), tiny_encoder_config)
    checked = 0
    for a in range(1, 300):
        exact = a * fps / 50
        if math.floor(exact + 0.5) == math.floor(exact):
            continue
        for samples in (400 + (a - 1) * 320, 400 + a * 320 - 1):  # the shortest and longest audio of A frames
            assert model.num_frames_for(samples) == int(a / 50 * fps), (a, samples)
        checked += 1
    assert checked >= 100


def test_cross_attention_dropout_acts_in_training_at_width_one():
    """At alignment width 1 the softmax weight is exactly 1. In training, attention dropout still zeroes it
    with probability p and scales it by 1/(1-p) otherwise: each head passes on 0 or v/(1-p). In eval: v."""
    from talkface.model.decoder import DecoderLayer, merge_heads

    torch.manual_seed(0)
    dim, heads, p, frames = 8, 4, 0.5, 200
    layer = DecoderLayer(dim, heads, 16, dropout=p)
    with torch.no_grad():  # identity output projection: the heads' outputs are visible as they are
        layer.multihead_attn.out_proj.weight.copy_(torch.eye(dim))
        layer.multihead_attn.out_proj.bias.zero_()
    memory_kv = layer.memory_keys_values(torch.randn(1, frames, dim), 1)  # one audio frame per motion frame
    x = torch.randn(1, frames, dim)
    values = merge_heads(memory_kv[1][:, :, :, 0]).view(1, frames, heads, dim // heads)
    layer.eval()
    assert torch.allclose(layer._cross_attention(x, memory_kv, 0).view_as(values), values)
    layer.train()
    out = layer._cross_attention(x, memory_kv, 0).view_as(values)
    dropped = (out == 0).all(-1)
    kept = torch.isclose(out, values / (1 - p), rtol=1e-5, atol=1e-7).all(-1)
    assert (dropped | kept).all(), "in training each head passes on either nothing or v/(1-p)"
    assert 0.35 < dropped.float().mean() < 0.65, f"dropped fraction {dropped.float().mean():.2f}, p = {p}"


@pytest.mark.parametrize("layers", [1, 2])
def test_decoder_equals_torch_decoder_layer_with_faceformer_masks(tiny_model_config, tiny_encoder_config, layers):
    cfg = dataclasses.replace(tiny_model_config, num_layers=layers)
    model = make_model(cfg, tiny_encoder_config)
    for k in (0, 2):
        tokens, memory = torch.randn(2, 13, 16), torch.randn(2, 13 * max(k, 1), 16)
        ours = model.decoder(tokens, model.decoder.memory_keys_values(memory, max(k, 1)))
        want = tokens
        tgt = biased_causal_mask(4, cfg.period, 13).repeat(2, 1, 1)
        mem = alignment_mask(13, memory.shape[1], k)
        for layer in model.decoder.layers:
            ref = nn.TransformerDecoderLayer(16, 4, cfg.ff_dim, cfg.dropout, batch_first=True).eval()
            ref.load_state_dict(layer.state_dict())
            want = ref(want, memory, tgt_mask=tgt, memory_mask=mem)
        torch.testing.assert_close(ours, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("biwi", [False, True])
def test_kv_cache_equals_recompute_loop_values_and_gradients(tiny_model_config, tiny_encoder_config, biwi):
    cfg = biwi_like(tiny_model_config) if biwi else tiny_model_config
    model = make_model(cfg, tiny_encoder_config)  # eval: dropout off
    audio, lengths, _, style, frames = batch_of([speech_like(0.8, 1), speech_like(0.8, 2)], cfg.fps, 10, 3)
    params = [p for p in model.parameters() if p.requires_grad]
    weights = torch.randn(2, int(frames[0]), 30)
    results = []
    for decode in (model.decode, model.decode_recompute):
        memory, _ = model.encode_audio(audio, lengths, frames)
        offsets = decode(memory, model.style_embedding(style), int(frames[0]))
        grads = torch.autograd.grad((offsets * weights).sum(), params, allow_unused=True)
        results.append((offsets, grads))
    (kv, kv_grads), (ref, ref_grads) = results
    assert kv.abs().max() > 0.01
    torch.testing.assert_close(kv, ref, atol=1e-5, rtol=1e-5)
    for (name, _), a, b in zip([(n, p) for n, p in model.named_parameters() if p.requires_grad], kv_grads, ref_grads,
                               strict=True):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


def test_teacher_forced_equals_autoregressive_fed_its_own_output(tiny_model_config, tiny_encoder_config):
    model = make_model(tiny_model_config, tiny_encoder_config)
    args = batch_of([speech_like(0.7)], 30, 10, 3)
    with torch.no_grad():
        free = model(*args)
        forced = model(*args, teacher=free.vertices)
    torch.testing.assert_close(forced.vertices, free.vertices, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # and it does depend on the teacher
        other = model(*args, teacher=free.vertices + 0.3)
    assert (other.vertices[:, 1:] - free.vertices[:, 1:]).abs().max() > 1e-3
    torch.testing.assert_close(other.vertices[:, 0], free.vertices[:, 0])  # frame 0 sees no motion


@pytest.mark.parametrize("biwi", [False, True])
def test_padded_batch_equals_one_clip_at_a_time(tiny_model_config, tiny_encoder_config, biwi):
    cfg = biwi_like(tiny_model_config) if biwi else tiny_model_config
    model = make_model(cfg, tiny_encoder_config)
    clips = [speech_like(0.5, 1), speech_like(0.9, 2), speech_like(0.7, 3)]
    audio, lengths, template, style, frames = batch_of(clips, cfg.fps, 10, 3)
    teacher = template[:, None] + 0.1 * torch.randn(3, int(frames.max()), 10, 3)
    with torch.no_grad():
        for forced in (None, teacher):
            batch = model(audio, lengths, template, style, frames, teacher=forced)
            assert batch.frame_mask.sum(1).tolist() == frames.tolist()
            for i, clip in enumerate(clips):
                n = int(frames[i])
                single = model(clip[None], lengths[i: i + 1], template[i: i + 1], style[i: i + 1], frames[i: i + 1],
                               teacher=None if forced is None else forced[i: i + 1, :n])
                torch.testing.assert_close(batch.vertices[i, :n], single.vertices[0], atol=1e-5, rtol=1e-5)


def test_two_thousand_frame_decode(tiny_model_config, tiny_encoder_config):
    model = make_model(tiny_model_config, tiny_encoder_config)
    audio = speech_like(67.0)  # FaceFormer stops at 600 frames (20 s); 67 s also takes the windowed encoder path
    out = model.generate(audio, torch.zeros(10, 3), torch.eye(3)[1], num_frames=2000)
    assert out.shape == (2000, 10, 3) and torch.isfinite(out).all()


def test_autoregressive_training_step(tiny_model_config, tiny_encoder_config):
    model = make_model(tiny_model_config, tiny_encoder_config, head_std=0).train()
    audio, lengths, template, style, frames = batch_of([speech_like(0.5), speech_like(0.4, 1)], 30, 10, 3)
    target = template[:, None] + 0.1
    out = model(audio, lengths, template, style, frames)
    loss = ((out.vertices - target).square().sum(-1) * out.frame_mask[..., None]).mean()
    loss.backward()
    assert model.motion_head.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.audio_encoder.wav2vec2.feature_extractor.parameters())


def test_generate_input_errors_and_mode(tiny_model_config, tiny_encoder_config):
    model = make_model(tiny_model_config, tiny_encoder_config).train()
    with pytest.raises(TemplateError, match=r"\(10, 3\)"):
        model.generate(speech_like(0.5), torch.zeros(9, 3), torch.eye(3)[0])
    with pytest.raises(ConfigError, match="alice, bob, carol"):
        model.generate(speech_like(0.5), torch.zeros(10, 3), torch.ones(4))
    with pytest.raises(AudioError, match="at least 400"):
        model.generate(torch.zeros(300), torch.zeros(10, 3), torch.eye(3)[0])
    model.generate(speech_like(0.3), torch.zeros(10, 3), torch.eye(3)[0])
    assert model.training
    assert model.style_vector("bob").tolist() == [0, 1, 0]
    with pytest.raises(ConfigError, match="valid styles"):
        model.style_vector("dave")


def test_kv_cache_buffer_grows_past_its_capacity_hint():
    from talkface.model.decoder import KVCache

    cache = KVCache(capacity=2)
    chunks = [torch.randn(1, 2, n, 3) for n in (1, 2, 4, 1)]
    with torch.no_grad():
        for c in chunks:
            keys, values = cache.extend(c, -c)
    torch.testing.assert_close(keys, torch.cat(chunks, 2))
    torch.testing.assert_close(values, -torch.cat(chunks, 2))
