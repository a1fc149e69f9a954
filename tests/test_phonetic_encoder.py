"""The shipped ``synthetic-phonetic`` encoder (issue #17): packaged, loaded by name without any hub, usable
from a train config, and still a phoneme recogniser (checked against espeak-ng's own phoneme timing)."""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

import talkface.model.audio_encoder as ae
from talkface.errors import EncoderError

REPO = Path(__file__).resolve().parents[1]
NAME = "synthetic-phonetic"


@pytest.fixture
def no_hub(monkeypatch):
    """Any attempt to reach or read the Hugging Face hub fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("the shipped encoder must not touch the hub")

    monkeypatch.setattr(ae, "_hub_reachable", refuse)
    monkeypatch.setattr(ae, "_from_pretrained", refuse)


def _shipped_state() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(ae.BUILTIN_DIR / f"{NAME}.safetensors"))


def test_files_are_small_and_installed_as_package_data():
    weights, meta = ae.BUILTIN_DIR / f"{NAME}.safetensors", ae.BUILTIN_DIR / f"{NAME}.json"
    assert weights.is_file() and meta.is_file()
    assert weights.stat().st_size < 8 * 2**20  # "a few MB at most"
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["talkface"]
    package = REPO / "talkface"
    shipped = {p for pattern in patterns for p in package.glob(pattern)}
    assert weights in shipped and meta in shipped


def test_loads_by_name_without_the_hub(no_hub):
    info = ae.builtin_encoder_info(NAME)
    config = ae.load_pretrained_encoder_config(NAME)
    assert config["hidden_size"] == info["wav2vec2_config"]["hidden_size"]
    model = ae.load_pretrained_wav2vec2(NAME)
    assert not any(p.requires_grad for p in model.feature_extractor.parameters())  # CNN frozen, as FaceFormer
    state = _shipped_state()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert set(state) - set(model.state_dict()) == {k for k in state if k.startswith(ae.PHONEME_HEAD_PREFIX)}


def test_missing_or_unknown_encoder_is_a_typed_error(monkeypatch, tmp_path):
    with pytest.raises(EncoderError, match="not an encoder shipped"):
        ae.builtin_encoder_info("synthetic-nothing")
    monkeypatch.setattr(ae, "BUILTIN_DIR", tmp_path)
    with pytest.raises(EncoderError, match="missing"):
        ae.load_pretrained_wav2vec2(NAME)


def test_train_config_file_selects_it_and_training_keeps_its_cnn(tmp_path, tiny_data, no_hub):
    from talkface.config import load_train_file, resolve_train_options
    from talkface.model.checkpoint import load_checkpoint
    from talkface.train import train

    path = tmp_path / "train.toml"
    path.write_text(f'encoder = "{NAME}"\nepochs = 1\nbatch_size = 2\nloss = "mse"\n[model]\nfeature_dim = 16\n')
    config, options = resolve_train_options(load_train_file(path), {}, source=str(path))
    assert config.encoder == NAME
    train(tiny_data, tmp_path / "run", config, model_overrides=options["model_overrides"], device="cpu")
    model, _ = load_checkpoint(tmp_path / "run", device="cpu")
    assert model.audio_encoder.hidden_size == ae.builtin_encoder_info(NAME)["wav2vec2_config"]["hidden_size"]
    state = _shipped_state()
    cnn = {k: v for k, v in model.audio_encoder.wav2vec2.state_dict().items() if k.startswith("feature_extractor.")}
    assert cnn and all(torch.equal(v, state[k]) for k, v in cnn.items())  # the frozen CNN is the shipped one


def _script():
    path = REPO / "scripts" / "train_phonetic_encoder.py"
    spec = importlib.util.spec_from_file_location("train_phonetic_encoder", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _frame_accuracy(model: torch.nn.Module, head: torch.nn.Linear, vocab: list[str], script, texts, voice) -> float:
    from talkface.model.audio_encoder import AudioEncoder
    from talkface.synthetic.speech import synthesize

    encoder = AudioEncoder(model.config.to_dict(), audio_frames_per_motion_frame=1, fps=50.0).eval()
    encoder.wav2vec2 = model.eval()
    index = {n: i for i, n in enumerate(vocab)}
    right = total = 0
    for text in texts:
        pcm, phonemes = synthesize(text, voice, 16_000, use_espeak=True)
        audio = torch.from_numpy(pcm.astype(np.float32) / 32768.0)
        frames = encoder.num_cnn_frames(audio.numel())
        labels = script.frame_labels(phonemes, frames, encoder.hop, encoder.receptive_field)
        target = torch.tensor([index.get(n, len(vocab) - 1) for n in labels])
        with torch.no_grad():
            hidden, _ = encoder(audio[None], torch.tensor([audio.numel()]), torch.tensor([frames]))
            right += int((head(hidden[0]).argmax(-1) == target).sum())
        total += frames
    return right / total


def test_it_recognises_phonemes_of_new_sentences_and_a_new_voice():
    """Frame labels come from espeak-ng's phoneme events (independent of the model); a random-init encoder
    with the same head scores near chance, so the bound can fail."""
    from talkface.synthetic.speech import VoiceSpec, espeak_available

    if not espeak_available():
        pytest.skip("espeak-ng is not installed")
    script = _script()
    info = ae.builtin_encoder_info(NAME)
    vocab = info["phonemes"]
    state = _shipped_state()
    head = torch.nn.Linear(int(info["wav2vec2_config"]["hidden_size"]), len(vocab))
    head.load_state_dict({k[len(ae.PHONEME_HEAD_PREFIX):]: v for k, v in state.items()
                          if k.startswith(ae.PHONEME_HEAD_PREFIX)})
    texts = ["Seven green frogs sang loudly near the quiet pond.", "Could you carry this heavy basket home?"]
    voice = VoiceSpec(espeak_voice=script.HELDOUT_VOICES[0], rate_wpm=170, pitch=45)
    accuracy = _frame_accuracy(ae.load_pretrained_wav2vec2(NAME), head, vocab, script, texts, voice)
    torch.manual_seed(0)
    random_model = ae.build_wav2vec2(info["wav2vec2_config"])
    chance = _frame_accuracy(random_model, head, vocab, script, texts, voice)
    assert accuracy > 0.3 and accuracy > chance + 0.15, (accuracy, chance)
