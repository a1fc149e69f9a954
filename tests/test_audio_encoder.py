import time

import pytest
import torch
from transformers import Wav2Vec2Config, Wav2Vec2Model

from talkface.errors import AudioError, EncoderError
from talkface.model import audio_encoder as ae
from talkface.model.audio_encoder import (
    AudioEncoder,
    crop_or_pad_features,
    interpolate_features,
    load_pretrained_encoder_config,
    spec_augment_mask,
    wav2vec2_base_config,
)


def make_encoder(config, k=0, normalize=True, **kwargs):
    torch.manual_seed(0)
    return AudioEncoder(config, audio_frames_per_motion_frame=k, fps=30.0, normalize=normalize, **kwargs).eval()


def speech_like(seconds, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * 16000)
    t = torch.arange(n) / 16000
    voiced = 0.3 * torch.sin(2 * torch.pi * 180 * t) * torch.sin(2 * torch.pi * 3 * t)
    return voiced + 0.05 * torch.randn(n, generator=g)


def test_tiny_config_keeps_wav2vec2_geometry(tiny_encoder_config):
    enc = make_encoder(tiny_encoder_config)
    assert enc.hop == 320 and enc.receptive_field == 400 and enc.feature_rate == 50
    for n in (400, 719, 720, 16000, 16001):
        assert enc.num_cnn_frames(n) == int(enc.wav2vec2._get_feat_extract_output_lengths(n))
    assert enc.num_cnn_frames(399) == 0
    assert not any(p.requires_grad for p in enc.wav2vec2.feature_extractor.parameters())
    assert all(p.requires_grad for p in enc.wav2vec2.encoder.parameters())


def test_base_config_is_wav2vec2_base_960h():
    c = wav2vec2_base_config()
    assert (c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"], c["intermediate_size"]) == (
        768, 12, 12, 3072)
    assert c["conv_dim"] == [512] * 7 and c["feat_extract_norm"] == "group" and not c["do_stable_layer_norm"]
    assert c["mask_time_prob"] == 0.05 and c["feat_proj_dropout"] == 0.1


def test_composition_equals_transformers_forward(tiny_encoder_config):
    """Without interpolation (k=1, all CNN frames kept) our composition is Wav2Vec2Model.forward."""
    enc = make_encoder(tiny_encoder_config, k=1, normalize=False)
    audio = speech_like(1.3)[None]
    frames = enc.num_cnn_frames(audio.shape[1])
    hidden, mask = enc(audio, torch.tensor([audio.shape[1]]), torch.tensor([frames]))
    with torch.no_grad():
        want = enc.wav2vec2(audio).last_hidden_state
    assert mask.all() and hidden.shape == want.shape
    torch.testing.assert_close(hidden, want, atol=1e-5, rtol=1e-5)


def test_interpolation_align_corners_hand_case():
    feats = torch.tensor([[0.0, 10.0], [1.0, 20.0], [2.0, 30.0]])
    out = interpolate_features(feats, 5)
    torch.testing.assert_close(out[:, 0], torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0]))
    torch.testing.assert_close(out[:, 1], torch.tensor([10.0, 15.0, 20.0, 25.0, 30.0]))
    torch.testing.assert_close(interpolate_features(feats, 2), feats[[0, 2]])  # endpoints kept


def test_crop_or_pad():
    feats = torch.arange(5.0)[:, None]
    assert crop_or_pad_features(feats, 4)[:, 0].tolist() == [0, 1, 2, 3]
    assert crop_or_pad_features(feats, 7)[:, 0].tolist() == [0, 1, 2, 3, 4, 4, 4]


@pytest.mark.parametrize("k", [0, 2])
def test_padded_batch_equals_one_clip_at_a_time(tiny_encoder_config, k):
    enc = make_encoder(tiny_encoder_config, k=k)
    clips = [speech_like(s, seed=i) for i, s in enumerate((0.55, 1.3, 0.9))]
    fps = 30 if k == 0 else 25
    frames = [int(len(c) / 16000 * fps) for c in clips]
    audio = torch.zeros(3, max(len(c) for c in clips))
    for i, c in enumerate(clips):
        audio[i, : len(c)] = c
    with torch.no_grad():
        batch, mask = enc(audio, torch.tensor([len(c) for c in clips]), torch.tensor(frames))
        for i, c in enumerate(clips):
            single, _ = enc(c[None], torch.tensor([len(c)]), torch.tensor([frames[i]]))
            n = single.shape[1]
            assert n == frames[i] * max(k, 1) and mask[i].sum() == n
            torch.testing.assert_close(batch[i, :n], single[0], atol=1e-5, rtol=1e-5)
            assert (batch[i, n:] == 0).all()


def test_waveform_normalised_inside(tiny_encoder_config):
    enc = make_encoder(tiny_encoder_config)
    audio = speech_like(0.8)[None]
    args = (torch.tensor([audio.shape[1]]), torch.tensor([24]))
    with torch.no_grad():
        torch.testing.assert_close(enc(audio * 0.05 + 0.01, *args)[0], enc(audio, *args)[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_chunked_cnn_equals_unchunked(norm):
    from talkface.model import tiny_encoder_config

    enc = make_encoder(tiny_encoder_config(feat_extract_norm=norm))
    wav = ae.normalize_audio(speech_like(3.07))
    with torch.no_grad():
        whole = enc.wav2vec2.feature_extractor(wav[None])[0].T
        for chunk in (7, 40, 149):
            torch.testing.assert_close(enc.cnn_features(wav, chunk_frames=chunk), whole, atol=1e-5, rtol=1e-4)


def test_transformer_windows_below_window_untouched_above_blended(tiny_encoder_config):
    enc = make_encoder(tiny_encoder_config, window_seconds=1.0, overlap_seconds=0.2)  # 30 frames, 6 overlap
    audio = speech_like(3.5)[None]
    with torch.no_grad():
        short, _ = enc(audio[:, :16000], torch.tensor([16000]), torch.tensor([30]))
        hidden = enc.wav2vec2.feature_projection(
            interpolate_features(enc.cnn_features(ae.normalize_audio(audio[0, :16000])), 30)[None])[0]
        torch.testing.assert_close(short, enc.wav2vec2.encoder(hidden).last_hidden_state)  # one window: exact
        frames = 100
        long, _ = enc(audio, torch.tensor([audio.shape[1]]), torch.tensor([frames]))
        hidden = enc.wav2vec2.feature_projection(
            interpolate_features(enc.cnn_features(ae.normalize_audio(audio[0])), frames)[None])[0]
        # oracle: every window run on its own, ramps of 1/7 .. 7/7 over the 6+1 frames at each end
        ramp = torch.tensor([min(t + 1, 30 - t, 7) / 7 for t in range(30)])
        total, weight = torch.zeros(frames, hidden.shape[2]), torch.zeros(frames, 1)
        for start in (0, 24, 48, 70):
            out = enc.wav2vec2.encoder(hidden[:, start: start + 30]).last_hidden_state[0]
            total[start: start + 30] += ramp[:, None] * out
            weight[start: start + 30] += ramp[:, None]
        torch.testing.assert_close(long[0], total / weight, atol=1e-5, rtol=1e-5)


def test_windowed_features_close_to_unchunked_where_both_fit(tiny_encoder_config):
    """Windows see less context than the whole clip, so this is approximate: 2 s windows, 0.5 s overlap.

    (At the default 30 s windows, a 70 s clip gives a mean relative error of 2e-4 with this tiny model.)
    """
    enc = make_encoder(tiny_encoder_config, window_seconds=2.0, overlap_seconds=0.5)
    audio = speech_like(6.0)[None]
    args = (torch.tensor([audio.shape[1]]), torch.tensor([180]))
    with torch.no_grad():
        windowed, _ = enc(audio, *args)
        enc.window_seconds = 1e9
        whole, _ = enc(audio, *args)
    error = (windowed - whole).norm(dim=-1) / whole.norm(dim=-1)
    assert error.mean() < 0.03 and error.max() < 0.15


def test_spec_augment_mask_spans_stay_inside_lengths():
    torch.manual_seed(3)
    mask = spec_augment_mask([20, 7, 1], total=25, prob=0.5, span=3, min_spans=1)
    assert mask.shape == (3, 25)
    assert not mask[0, 20:].any() and not mask[1, 7:].any() and not mask[2].any()
    assert mask[0].sum() >= 3 and mask[1].sum() >= 3
    torch.manual_seed(3)
    assert torch.equal(mask, spec_augment_mask([20, 7, 1], total=25, prob=0.5, span=3, min_spans=1))


def test_too_short_clip_is_an_audio_error(tiny_encoder_config):
    enc = make_encoder(tiny_encoder_config)
    with pytest.raises(AudioError, match="at least 400 samples"):
        enc(torch.zeros(2, 1000), torch.tensor([1000, 399]), torch.tensor([2, 1]))


def test_training_pass_trains_transformer_not_cnn(tiny_encoder_config):
    enc = make_encoder(tiny_encoder_config).train()
    audio = speech_like(0.7)[None]
    hidden, _ = enc(audio, torch.tensor([audio.shape[1]]), torch.tensor([21]))
    hidden.square().sum().backward()
    assert all(p.grad is None for p in enc.wav2vec2.feature_extractor.parameters())
    assert enc.wav2vec2.encoder.layers[0].attention.q_proj.weight.grad is not None


def test_load_pretrained_from_local_folder(tmp_path, tiny_encoder_config):
    torch.manual_seed(1)
    source = Wav2Vec2Model(Wav2Vec2Config(**tiny_encoder_config))
    source.save_pretrained(tmp_path / "w2v")
    assert load_pretrained_encoder_config(str(tmp_path / "w2v"))["hidden_size"] == 32
    enc = make_encoder(tiny_encoder_config)
    enc.load_pretrained(str(tmp_path / "w2v"))
    torch.testing.assert_close(enc.wav2vec2.encoder.layers[1].feed_forward.output_dense.weight,
                               source.encoder.layers[1].feed_forward.output_dense.weight)
    assert not any(p.requires_grad for p in enc.wav2vec2.feature_extractor.parameters())
    wide = make_encoder(ae.tiny_encoder_config(hidden_size=48))
    with pytest.raises(EncoderError, match="hidden size 32"):
        wide.load_pretrained(str(tmp_path / "w2v"))


def test_offline_and_missing_encoder_fail_fast(tmp_path, monkeypatch):
    monkeypatch.setattr(ae, "_hub_reachable", lambda timeout=ae.HUB_PROBE_TIMEOUT: False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    start = time.perf_counter()
    with pytest.raises(EncoderError, match="--encoder"):
        load_pretrained_encoder_config("someone/not-cached-wav2vec2")
    with pytest.raises(EncoderError, match="does not exist"):
        ae.load_pretrained_wav2vec2(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderError, match="not a loadable"):
        ae.load_pretrained_wav2vec2(str(tmp_path / "empty"))
    assert time.perf_counter() - start < 5
