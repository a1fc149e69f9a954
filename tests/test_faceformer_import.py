"""Import of a FaceFormer-layout state_dict, checked against FaceFormer's forward pass written out here
from REFERENCE.md's appendix with the very modules the weights came from."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import Wav2Vec2Config, Wav2Vec2Model

from talkface.errors import CheckpointError, OutputError
from talkface.model import TalkFaceModel
from talkface.model.checkpoint import load_checkpoint
from talkface.model.faceformer_import import import_faceformer
from talkface.presets import VOCASET_TRAIN, get_preset

D, V3, PERIOD = 64, 15069, 30  # the vocaset preset


def faceformer_pe(period, dim, max_seq_len=600):
    """FaceFormer's PPE buffer: a sinusoid table of `period` rows tiled (max_seq_len // period + 1) times."""
    pe = torch.zeros(period, dim)
    position = torch.arange(period, dtype=torch.float)[:, None]
    div = torch.exp(torch.arange(0, dim, 2).float() * (-math.log(10000.0) / dim))
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)
    return pe[None].repeat(1, max_seq_len // period + 1, 1)


def faceformer_biased_mask(n_head, max_seq_len, period):
    """FaceFormer's construction: flipped, repeated period steps under ALiBi slopes, -inf above the diagonal."""
    slopes = torch.tensor([0.25, 0.0625, 0.015625, 0.00390625])[:n_head]
    bias = torch.arange(0, max_seq_len, period)[:, None].repeat(1, period).view(-1) // period
    bias = -torch.flip(bias, dims=[0]).float()
    alibi = torch.zeros(max_seq_len, max_seq_len)
    for i in range(max_seq_len):
        alibi[i, : i + 1] = bias[-(i + 1):]
    alibi = slopes[:, None, None] * alibi[None]
    causal = torch.tril(torch.ones(max_seq_len, max_seq_len)) == 1
    return torch.zeros(max_seq_len, max_seq_len).masked_fill(~causal, float("-inf"))[None] + alibi


class FaceFormerParts(nn.Module):
    def __init__(self, encoder_config):
        super().__init__()
        self.audio_encoder = Wav2Vec2Model(Wav2Vec2Config(**encoder_config))
        self.audio_feature_map = nn.Linear(encoder_config["hidden_size"], D)
        self.vertice_map = nn.Linear(V3, D)
        self.vertice_map_r = nn.Linear(D, V3)
        self.obj_vector = nn.Linear(8, D, bias=False)
        self.transformer_decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(D, 4, 2 * D, batch_first=True), num_layers=1)
        nn.init.normal_(self.vertice_map_r.weight, std=1e-3)  # trained, so not zero any more
        nn.init.normal_(self.vertice_map_r.bias, std=1e-3)

    def state(self, old_weight_norm):
        state = {k: v for k, v in self.state_dict().items()}
        state["PPE.pe"] = faceformer_pe(PERIOD, D)
        if old_weight_norm:  # torch < 2.1 / transformers 4.6 names
            for new, old in (("original0", "weight_g"), ("original1", "weight_v")):
                key = f"audio_encoder.encoder.pos_conv_embed.conv.parametrizations.weight.{new}"
                state[f"audio_encoder.encoder.pos_conv_embed.conv.{old}"] = state.pop(key)
        return state

    @torch.no_grad()
    def predict(self, audio, template, one_hot):
        """FaceFormer's inference (VOCASET path), REFERENCE.md appendix steps 1-5, dropout off."""
        x = (audio - audio.mean()) / torch.sqrt(audio.var(unbiased=False) + 1e-7)  # Wav2Vec2Processor
        feats = self.audio_encoder.feature_extractor(x[None]).transpose(1, 2)
        frames = int(feats.shape[1] / 50 * 30)
        feats = F.interpolate(feats.transpose(1, 2), size=frames, mode="linear", align_corners=True).transpose(1, 2)
        hidden = self.audio_encoder.feature_projection(feats)[0]
        memory = self.audio_feature_map(self.audio_encoder.encoder(hidden).last_hidden_state)
        style = self.obj_vector(one_hot[None])[:, None]
        pe, biased = faceformer_pe(PERIOD, D), faceformer_biased_mask(4, 600, PERIOD)
        memory_mask = torch.ones(frames, frames)
        for i in range(frames):
            memory_mask[i, i] = 0
        emb = style
        for i in range(frames):
            out = self.transformer_decoder(emb + pe[:, : i + 1], memory, tgt_mask=biased[:, : i + 1, : i + 1],
                                           memory_mask=memory_mask[: i + 1] == 1)
            out = self.vertice_map_r(out)
            emb = torch.cat([emb, self.vertice_map(out[:, -1:]) + style], 1)
        return (out + template.reshape(1, 1, -1)).reshape(frames, -1, 3)


@pytest.fixture
def parts(tiny_encoder_config):
    torch.manual_seed(0)
    return FaceFormerParts(tiny_encoder_config).eval()


def inputs():
    g = torch.Generator().manual_seed(5)
    audio = 0.2 * torch.sin(torch.arange(9000) / 9.0) + 0.05 * torch.randn(9000, generator=g)
    return audio, 0.1 * torch.randn(5023, 3, generator=g), torch.eye(8)[2]


@pytest.mark.parametrize("old_weight_norm", [True, False])
def test_imported_model_equals_faceformer_and_hand_placed_weights(tmp_path, parts, tiny_encoder_config,
                                                                  old_weight_norm):
    torch.save(parts.state(old_weight_norm), tmp_path / "vocaset.pth")
    path = import_faceformer(tmp_path / "vocaset.pth", preset="vocaset", speakers=list(VOCASET_TRAIN),
                             out=tmp_path / "imported", encoder_config=tiny_encoder_config)
    assert path == tmp_path / "imported" / "best.safetensors"
    model, meta = load_checkpoint(tmp_path / "imported")
    assert meta["extra"]["source"] == "faceformer" and meta["speakers"] == list(VOCASET_TRAIN)
    preset = get_preset("vocaset")
    assert (model.config.feature_dim, model.config.period, model.config.fps, model.config.num_vertices) == (
        preset.feature_dim, preset.period, preset.fps, preset.num_vertices)

    torch.manual_seed(1)
    by_hand = TalkFaceModel(model.config, tiny_encoder_config).eval()
    with torch.no_grad():
        by_hand.audio_encoder.wav2vec2.load_state_dict(parts.audio_encoder.state_dict())
        for ours, theirs in ((by_hand.audio_feature_map, parts.audio_feature_map),
                             (by_hand.motion_encoder, parts.vertice_map), (by_hand.motion_head, parts.vertice_map_r),
                             (by_hand.style_embedding, parts.obj_vector)):
            for name, p in ours.named_parameters():
                p.copy_(getattr(theirs, name))
        by_hand.decoder.layers[0].load_state_dict(parts.transformer_decoder.layers[0].state_dict())

    audio, template, style = inputs()
    imported = model.generate(audio, template, style)
    torch.testing.assert_close(imported, by_hand.generate(audio, template, style), atol=0, rtol=0)
    reference = parts.predict(audio, template, style)
    assert imported.shape == reference.shape == (16, 5023, 3)
    assert (reference - template).abs().max() > 1e-3
    torch.testing.assert_close(imported, reference, atol=1e-5, rtol=1e-5)


def test_wrapped_and_data_parallel_state_dicts(tmp_path, parts, tiny_encoder_config):
    state = {"module." + k: v for k, v in parts.state(False).items()}
    torch.save({"state_dict": state}, tmp_path / "wrapped.pth")
    path = import_faceformer(tmp_path / "wrapped.pth", preset="vocaset", speakers=list(VOCASET_TRAIN),
                             out=tmp_path / "x.safetensors", encoder_config=tiny_encoder_config)
    assert path.name == "x.safetensors"
    with pytest.raises(OutputError, match="already exists"):
        import_faceformer(tmp_path / "wrapped.pth", preset="vocaset", speakers=list(VOCASET_TRAIN),
                          out=path, encoder_config=tiny_encoder_config)


class NotATensor:
    pass


def test_mismatches_and_unsafe_files_are_refused(tmp_path, parts, tiny_encoder_config):
    torch.save(parts.state(False), tmp_path / "vocaset.pth")
    kwargs = {"out": tmp_path / "out", "encoder_config": tiny_encoder_config}
    with pytest.raises(CheckpointError, match="V\\*3 = 15069, but preset 'biwi' expects 70110"):
        import_faceformer(tmp_path / "vocaset.pth", preset="biwi", speakers=list("ABCDEFGH"), **kwargs)
    with pytest.raises(CheckpointError, match="trained on 8 speakers, but --speakers names 6"):
        import_faceformer(tmp_path / "vocaset.pth", preset="vocaset", speakers=list("ABCDEF"), **kwargs)
    with pytest.raises(CheckpointError, match="hidden_size 768"):
        import_faceformer(tmp_path / "vocaset.pth", preset="vocaset", speakers=list(VOCASET_TRAIN),
                          out=tmp_path / "out")  # default encoder config: wav2vec2-base, 768-d
    state = parts.state(False)
    state["PPE.pe"] = faceformer_pe(25, D)
    torch.save(state, tmp_path / "period.pth")
    with pytest.raises(CheckpointError, match="period 25, but the preset expects period 30"):
        import_faceformer(tmp_path / "period.pth", preset="vocaset", speakers=list(VOCASET_TRAIN), **kwargs)
    del state["transformer_decoder.layers.0.norm3.bias"]
    state["PPE.pe"] = faceformer_pe(PERIOD, D)
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="missing \\['decoder.layers.0.norm3.bias'\\]"):
        import_faceformer(tmp_path / "partial.pth", preset="vocaset", speakers=list(VOCASET_TRAIN), **kwargs)
    torch.save({"weights": NotATensor()}, tmp_path / "pickle.pth")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        import_faceformer(tmp_path / "pickle.pth", preset="vocaset", speakers=list(VOCASET_TRAIN), **kwargs)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        import_faceformer(tmp_path / "junk.pth", preset="vocaset", speakers=list(VOCASET_TRAIN), **kwargs)
    assert not (tmp_path / "out").exists()
