"""The frozen CNN's feature cache (issue 19): a training step with it is the step without it (same loss,
same gradients, SpecAugment included), a changed encoder or different audio never reuses features, the
cache steps aside when the CNN is trainable, and the memory/disk tiers behave."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from talkface.config import TrainConfig
from talkface.model import FeatureCache, TalkFaceModel
from talkface.model.audio_encoder import normalize_audio
from talkface.model.feature_cache import feature_key
from talkface.train import sequence_loss


def speech_like(seconds, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * 16000)
    t = torch.arange(n) / 16000
    return 0.3 * torch.sin(2 * torch.pi * (150 + 40 * seed) * t) * torch.sin(2 * torch.pi * 3 * t) + \
        0.05 * torch.randn(n, generator=g)


def padded_batch(model, lengths_s, seed=0):
    """Clips of the given lengths (s), zero-padded, with their frame counts and smooth targets."""
    cfg = model.config
    clips = [speech_like(s, seed=seed + i) for i, s in enumerate(lengths_s)]
    audio = torch.zeros(len(clips), max(len(c) for c in clips))
    for i, c in enumerate(clips):
        audio[i, : len(c)] = c
    frames = torch.tensor([int(len(c) / 16000 * cfg.fps) for c in clips])
    g = torch.Generator().manual_seed(seed)
    template = 0.1 * torch.randn(len(clips), cfg.num_vertices, 3, generator=g)
    t = torch.arange(int(frames.max()), dtype=torch.float32)[None, :, None, None]
    target = template[:, None] + 1e-2 * torch.sin(0.5 * t + torch.rand(len(clips), 1, cfg.num_vertices, 3,
                                                                         generator=g) * 6)
    style = torch.eye(cfg.num_speakers)[torch.arange(len(clips)) % cfg.num_speakers]
    return {"audio": audio, "audio_lengths": torch.tensor([len(c) for c in clips]), "template": template,
            "style": style, "num_frames": frames, "vertices": target}


def make_model(model_config, encoder_config, seed=0):
    torch.manual_seed(seed)
    model = TalkFaceModel(model_config, encoder_config).train()
    torch.nn.init.normal_(model.motion_head.weight, std=1e-2)  # the zero init would hide the encoder's effect
    return model


def step(model, b, seed, amp=False):
    """Loss and gradients of one training step (dropout and SpecAugment drawn from ``seed``); ``amp``:
    the forward pass under bfloat16 autocast on CUDA, the loss in float32 (as the training loop does)."""
    torch.manual_seed(seed)
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext():
        out = model(b["audio"], b["audio_lengths"], b["template"], b["style"], b["num_frames"])
    loss = sequence_loss(out.vertices.float(), b["vertices"], b["num_frames"], TrainConfig(gamma=1e-2))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


def step_difference(a, b):
    """(relative loss difference, largest gradient difference relative to the largest gradient)."""
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    assert grads_a.keys() == grads_b.keys()
    scale = max(float(g.abs().max()) for g in grads_b.values())
    worst = max(float((grads_a[n] - grads_b[n]).abs().max()) for n in grads_b)
    return abs(loss_a - loss_b) / abs(loss_b), worst / scale


def assert_same_step(a, b, tolerance=1e-6):
    loss_diff, grad_diff = step_difference(a, b)
    assert loss_diff <= tolerance and grad_diff <= tolerance, (loss_diff, grad_diff)


@pytest.mark.parametrize("k", [0, 2])
def test_cached_training_steps_equal_uncached(tiny_model_config, tiny_encoder_config, tmp_path, k):
    """Three steps over padded batches of unequal clips, SpecAugment on: identical with and without the cache.

    The batches reuse clips (hits) in other positions and paddings, and two clips of equal length
    differ only in content (a key blind to the samples would swap their features).
    """
    from dataclasses import replace

    config = replace(tiny_model_config, audio_frames_per_motion_frame=k, fps=30.0 if k == 0 else 25.0)
    plain = make_model(config, tiny_encoder_config)
    cached = copy.deepcopy(plain)
    cache = FeatureCache(2**20, tmp_path / "features")
    cached.audio_encoder.feature_cache = cache
    assert cached.audio_encoder.config.mask_time_prob > 0  # SpecAugment acts in these training steps
    batches = [padded_batch(plain, (0.6, 0.6, 0.45), seed=0), padded_batch(plain, (0.45, 0.6), seed=1),
               padded_batch(plain, (0.6, 0.6, 0.45), seed=0)]
    for i, b in enumerate(batches):
        assert_same_step(step(cached, b, seed=i), step(plain, b, seed=i))
    assert cache.stats.misses == 5 and cache.stats.hits == 3 and cache.stats.bypassed == 0
    assert len(list((tmp_path / "features").glob("*.safetensors"))) == 5


def test_spec_augment_acts_after_the_cache(tiny_model_config, tiny_encoder_config):
    """With masking certain to hit frames, the cached step still equals the uncached one (masks are drawn
    and applied to the projected features every step), and masking does change the step."""
    encoder_config = {**tiny_encoder_config, "mask_time_prob": 0.5, "mask_time_length": 2}
    plain = make_model(tiny_model_config, encoder_config)
    cached = copy.deepcopy(plain)
    cached.audio_encoder.feature_cache = FeatureCache(2**20)
    b = padded_batch(plain, (0.6, 0.5))
    step(cached, b, seed=0)  # fill
    assert_same_step(step(cached, b, seed=3), step(plain, b, seed=3))
    assert cached.audio_encoder.feature_cache.stats.hits == 2
    unmasked = copy.deepcopy(plain)
    unmasked.audio_encoder.wav2vec2.config.mask_time_prob = 0.0
    with pytest.raises(AssertionError):
        assert_same_step(step(unmasked, b, seed=3), step(plain, b, seed=3))


def test_changed_encoder_invalidates(tiny_model_config, tiny_encoder_config, tmp_path):
    """New CNN weights (in place, by load_state_dict, or a new module) miss in memory and on disk."""
    model = make_model(tiny_model_config, tiny_encoder_config).eval()
    enc = model.audio_encoder
    enc.feature_cache = FeatureCache(2**20, tmp_path / "features")
    wav = speech_like(0.5)

    def features():
        with torch.no_grad():
            return enc.clip_cnn_features(wav).clone()

    def fresh():
        with torch.no_grad():
            return enc._compute_clip_cnn(wav)

    first = features()
    assert torch.equal(features(), first) and enc.feature_cache.stats.hits == 1
    conv = enc.wav2vec2.feature_extractor.conv_layers[3].conv
    with torch.no_grad():
        conv.weight.mul_(1.5)  # in place
    changed = features()
    assert not torch.allclose(changed, first) and torch.equal(changed, fresh())
    other = make_model(tiny_model_config, tiny_encoder_config, seed=5).audio_encoder.wav2vec2
    enc.wav2vec2.feature_extractor.load_state_dict(other.feature_extractor.state_dict())
    assert torch.equal(features(), fresh())
    assert enc.feature_cache.stats.misses == 3
    enc.wav2vec2 = other  # a replaced module (load_pretrained does this) with the weights just loaded:
    assert torch.equal(features(), fresh())  # keyed by content, so these features are reused
    assert enc.feature_cache.stats.misses == 3 and enc.feature_cache.stats.hits == 2

    # the disk tier of a run, read by another encoder: nothing reused; by the same encoder: reused
    again = make_model(tiny_model_config, tiny_encoder_config).eval().audio_encoder
    again.feature_cache = FeatureCache(0, tmp_path / "features")
    with torch.no_grad():
        torch.testing.assert_close(again.clip_cnn_features(wav), first, rtol=0, atol=0)
    assert again.feature_cache.stats.disk_hits == 1
    stranger = make_model(tiny_model_config, tiny_encoder_config, seed=9).eval().audio_encoder
    stranger.feature_cache = FeatureCache(0, tmp_path / "features")
    with torch.no_grad():
        stranger.clip_cnn_features(wav)
    assert stranger.feature_cache.stats.disk_hits == 0 and stranger.feature_cache.stats.misses == 1


def test_key_depends_on_settings_that_change_features(tiny_model_config, tiny_encoder_config):
    enc = make_model(tiny_model_config, tiny_encoder_config).audio_encoder
    wav = speech_like(0.5)
    base = feature_key(enc.cnn_fingerprint(), wav, "cpu:None")
    assert feature_key(enc.cnn_fingerprint(), wav.clone(), "cpu:None") == base
    assert feature_key(enc.cnn_fingerprint(), wav[:-1], "cpu:None") != base
    nudged = wav.clone()
    nudged[1000] += 1e-6
    assert feature_key(enc.cnn_fingerprint(), nudged, "cpu:None") != base
    assert feature_key(enc.cnn_fingerprint(), wav, "cuda:torch.bfloat16") != base
    before = enc.cnn_fingerprint()
    enc.normalize = False
    assert enc.cnn_fingerprint() != before


def test_cache_steps_aside_when_the_cnn_is_trainable(tiny_model_config, tiny_encoder_config):
    model = make_model(tiny_model_config, tiny_encoder_config)
    model.audio_encoder.feature_cache = cache = FeatureCache(2**20)
    b = padded_batch(model, (0.5,))
    step(model, b, seed=0)
    assert cache.stats.misses == 1
    for p in model.audio_encoder.wav2vec2.feature_extractor.parameters():
        p.requires_grad_(True)
    plain = copy.deepcopy(model)
    plain.audio_encoder.feature_cache = None
    cached_step, plain_step = step(model, b, seed=1), step(plain, b, seed=1)
    assert_same_step(cached_step, plain_step)
    assert cache.stats.hits == 0 and cache.stats.bypassed == 1 and "trainable" in cache.stats.reason
    assert any(n.startswith("audio_encoder.wav2vec2.feature_extractor") for n in cached_step[1])


def test_padding_the_audio_would_change_group_norm_features(tiny_model_config, tiny_encoder_config):
    """Why the cache holds each clip's own CNN output: wav2vec2-base's first layer group-normalises over
    time, so the CNN run on zero-padded audio differs even on the frames the clip covers; the encoder pads
    the per-clip features instead (cached or not), which test_cached_training_steps_equal_uncached checks."""
    enc = make_model(tiny_model_config, tiny_encoder_config).eval().audio_encoder
    assert enc.config.feat_extract_norm == "group"
    wav = normalize_audio(speech_like(0.5))
    with torch.no_grad():
        own = enc.cnn_features(wav)
        on_padded = enc.cnn_features(torch.cat([wav, torch.zeros(8000)]))
    assert on_padded.shape[0] > own.shape[0]
    assert not torch.allclose(on_padded[: own.shape[0]], own, atol=1e-3)


def test_memory_tier_is_bounded_least_recently_used_first():
    item = torch.zeros(10, 25)  # 1000 bytes
    cache = FeatureCache(2500)
    for key in "abc":
        cache.put(key, item.clone())
    assert len(cache) == 2 and cache.stats.memory_bytes == 2000
    assert cache.get("a", item.device) is None  # evicted first
    assert cache.get("b", item.device) is not None  # now most recent
    cache.put("d", item.clone())
    assert cache.get("c", item.device) is None and cache.get("b", item.device) is not None
    big = FeatureCache(500)
    big.put("x", item)
    assert len(big) == 0 and big.stats.memory_bytes == 0


def test_disk_tier_round_trip_damaged_and_foreign_files_failed_writes(tmp_path):
    folder = tmp_path / "features"
    features = torch.randn(7, 5)
    cpu = torch.device("cpu")
    FeatureCache(0, folder).put("k1", features)
    assert not list(folder.glob(".*"))  # atomic: no temp file left
    reader = FeatureCache(2**20, folder)
    assert torch.equal(reader.get("k1", cpu), features) and reader.stats.disk_hits == 1
    assert reader.get("k1", cpu) is not None and reader.stats.hits == 1
    (folder / "k2.safetensors").write_bytes((folder / "k1.safetensors").read_bytes())
    assert FeatureCache(0, folder).get("k2", cpu) is None  # a file under another key's name
    (folder / "k1.safetensors").write_bytes(b"\x00" * 10)  # damaged
    assert FeatureCache(0, folder).get("k1", cpu) is None
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    failing = FeatureCache(2**20, blocked / "sub")
    with pytest.warns(RuntimeWarning, match="stops writing"):
        failing.put("k3", features)  # cannot write: counted, training goes on
    assert failing.stats.write_errors == 1 and failing.get("k3", cpu) is not None


def test_train_with_and_without_cache_gives_the_same_run(tiny_data, tmp_path):
    """Two epochs (batch 2, validation) with the default cache and with none: same losses, same weights;
    the second epoch's CNN features all come from the cache, and each clip has one file on disk."""
    from safetensors.torch import load_file

    from talkface.data import load_prepared
    from talkface.model import CACHE_DIR, tiny_encoder_config
    from talkface.train import train

    runs, events = {}, {}
    for name, cache in (("cached", {}), ("plain", {"feature_cache_mb": 0.0, "feature_cache_disk": False})):
        config = TrainConfig(epochs=2, lr=3e-4, band=2, batch_size=2, encoder="tiny", **cache)
        events[name] = []
        runs[name] = train(tiny_data, tmp_path / name, config, encoder_config=tiny_encoder_config(), device="cpu",
                           on_progress=events[name].append)
    for key in ("train_loss", "val_loss", "val_mve"):
        assert [h[key] for h in runs["cached"].history] == pytest.approx(
            [h[key] for h in runs["plain"].history], rel=1e-6), key
    a, b = load_file(runs["cached"].last_path), load_file(runs["plain"].last_path)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-9)
    dataset = load_prepared(tiny_data)
    clips = len(dataset.split("train")) + len(dataset.split("val"))
    assert len(list((tmp_path / "cached" / CACHE_DIR).glob("*.safetensors"))) == clips
    assert not (tmp_path / "plain" / CACHE_DIR).exists()
    epochs = [e for e in events["cached"] if e["event"] == "epoch"]
    assert epochs[0]["feature_cache"]["misses"] == clips
    assert epochs[1]["feature_cache"]["misses"] == clips and epochs[1]["feature_cache"]["hits"] >= clips
    assert [e["feature_cache"] for e in events["plain"] if e["event"] == "epoch"] == [None, None]


def test_resume_accepts_other_cache_settings(tmp_path):
    from talkface.config import to_dict
    from talkface.errors import ConfigError
    from talkface.train.state import check_resumable

    saved = to_dict(TrainConfig(epochs=1))
    del saved["feature_cache_mb"], saved["feature_cache_disk"]  # a run from before the cache
    state = {"config": saved, "model_config": {}, "history": []}
    check_resumable(state, to_dict(TrainConfig(epochs=2, feature_cache_mb=0.0, feature_cache_disk=False)), {},
                    tmp_path)
    with pytest.raises(ConfigError, match="lr"):
        check_resumable(state, to_dict(TrainConfig(epochs=2, lr=1.0)), {}, tmp_path)


def test_feature_cache_mb_is_checked():
    from talkface.errors import ConfigError

    for bad in (-1.0, float("nan"), "1"):
        with pytest.raises(ConfigError, match="feature_cache_mb"):
            TrainConfig(feature_cache_mb=bad)


@pytest.mark.gpu
@pytest.mark.parametrize("amp", [False, True])
def test_cache_on_cuda_is_exact_and_keyed_by_autocast(tiny_model_config, tiny_encoder_config, amp):
    """On CUDA (float32 and bfloat16 autocast): cached features are the recomputed ones bit for bit, and a
    cached step differs from an uncached one no more than two uncached steps differ (CUDA's own
    run-to-run nondeterminism), and never by more than 1e-6 in float32. Autocast keys separate entries."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    plain = make_model(tiny_model_config, tiny_encoder_config).cuda()
    cached = copy.deepcopy(plain)
    cached.audio_encoder.feature_cache = cache = FeatureCache(2**20)
    b = {k: v.cuda() for k, v in padded_batch(plain, (0.6, 0.6, 0.45)).items()}
    step(cached, b, seed=0, amp=amp)  # fill
    noise = step_difference(step(plain, b, seed=1, amp=amp), step(plain, b, seed=1, amp=amp))
    tolerance = max(1e-6, 4 * max(noise)) if amp else 1e-6
    assert_same_step(step(cached, b, seed=1, amp=amp), step(plain, b, seed=1, amp=amp), tolerance)
    assert cache.stats.hits == 3 and cache.stats.misses == 3
    enc = cached.audio_encoder
    wav = b["audio"][0, : int(b["audio_lengths"][0])]
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        assert torch.equal(enc.clip_cnn_features(wav), enc._compute_clip_cnn(wav))
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=not amp):
        enc.clip_cnn_features(wav)
    assert cache.stats.misses == 4  # the other precision is another entry
