import json
import struct

import pytest
import torch
from torch import nn

from talkface.errors import CheckpointError
from talkface.model import TalkFaceModel
from talkface.model.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint


@pytest.fixture
def model(tiny_model_config, tiny_encoder_config):
    torch.manual_seed(0)
    m = TalkFaceModel(tiny_model_config, tiny_encoder_config).eval()
    nn.init.normal_(m.motion_head.weight, std=0.05)
    return m


def test_round_trip_is_bit_exact(tmp_path, model):
    path = save_checkpoint(tmp_path / "run" / "best.safetensors", model, extra={"epoch": 3, "val_loss": 0.25})
    assert sorted(p.name for p in path.parent.iterdir()) == ["best.safetensors"]  # no temp files left
    loaded, meta = load_checkpoint(path)
    assert not loaded.training
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert loaded.config == model.config and loaded.encoder_config["hidden_size"] == 32
    assert not any(p.requires_grad for p in loaded.audio_encoder.wav2vec2.feature_extractor.parameters())
    audio = torch.randn(12000) * 0.1
    template, style = torch.randn(10, 3), torch.tensor([0.2, 0.8, 0.0])
    assert torch.equal(model.generate(audio, template, style), loaded.generate(audio, template, style))
    assert meta["format"] == "talkface" and meta["format_version"] == 1
    assert meta["speakers"] == ["alice", "bob", "carol"] and meta["fps"] == 30.0
    assert meta["extra"] == {"epoch": 3, "val_loss": 0.25}
    assert meta["model_config"]["feature_dim"] == 16 and meta["encoder_config"]["conv_dim"] == [16] * 7


def test_meta_is_cheap_and_counts_parameters(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    meta = read_checkpoint_meta(path)
    assert meta["num_parameters"] == sum(t.numel() for t in model.state_dict().values())
    assert meta["talkface_version"] and meta["path"] == str(path)


def test_run_folder_prefers_best_then_last(tmp_path, model):
    run = tmp_path / "run"
    save_checkpoint(run / "last.safetensors", model, extra={"which": "last"})
    assert read_checkpoint_meta(run)["extra"]["which"] == "last"
    save_checkpoint(run / "best.safetensors", model, extra={"which": "best"})
    assert load_checkpoint(run)[1]["extra"]["which"] == "best"
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither best.safetensors nor last.safetensors"):
        load_checkpoint(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_truncated_file(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    data = path.read_bytes()
    for cut in (len(data) - 100, 200, 5):
        (tmp_path / "cut.safetensors").write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated|too short"):
            load_checkpoint(tmp_path / "cut.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=f"expected {len(data)} bytes, found {len(data) - 100}"):
        read_checkpoint_meta(tmp_path / "cut.safetensors")


def test_foreign_files(tmp_path, model):
    torch.save(model.state_dict(), tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="PyTorch pickle/zip"):
        load_checkpoint(tmp_path / "model.pt")
    (tmp_path / "text.safetensors").write_text("hello, this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(tmp_path / "text.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="expected a talkface checkpoint .*found format 'pt'"):
        load_checkpoint(tmp_path / "other.safetensors")


def rewrite_meta(src, dst, **changes):
    """Copy a checkpoint with edited header metadata (same tensors)."""
    data = src.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8: 8 + n])
    header["__metadata__"].update(changes)
    raw = json.dumps(header).encode()
    dst.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])


def test_newer_format_and_mismatching_weights(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    rewrite_meta(path, tmp_path / "new.safetensors", format_version="2")
    with pytest.raises(CheckpointError, match="format version 2 .*reads format version 1"):
        load_checkpoint(tmp_path / "new.safetensors")
    meta = read_checkpoint_meta(path)
    config = {**meta["model_config"], "feature_dim": 32}
    talkface = {k: meta[k] for k in ("format", "format_version", "talkface_version", "encoder_config", "speakers",
                                      "fps", "extra")}
    rewrite_meta(path, tmp_path / "bad.safetensors", talkface=json.dumps({**talkface, "model_config": config}))
    with pytest.raises(CheckpointError, match="weights do not match"):
        load_checkpoint(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("version", ["0", "-1"])
def test_older_format_versions_are_refused(tmp_path, model, version):
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    old = tmp_path / "old.safetensors"
    rewrite_meta(path, old, format_version=version)
    for read in (read_checkpoint_meta, load_checkpoint):
        with pytest.raises(CheckpointError, match=f"old.safetensors: checkpoint format version {version} is not "
                                                  "supported; expected 1"):
            read(old)


def test_every_header_length_loads(tmp_path, model):
    """Header lengths of every residue mod 256 (128 included, whose first byte is the pickle opcode 0x80)."""
    lengths = set()
    for pad in range(0, 264, 1):
        path = save_checkpoint(tmp_path / "m.safetensors", model, extra={"note": "x" * pad})
        length = int.from_bytes(path.read_bytes()[:8], "little")
        lengths.add(length % 256)
        if length % 256 == 128:
            assert path.read_bytes()[0] == 0x80
        assert read_checkpoint_meta(path)["extra"]["note"] == "x" * pad
    assert 128 in lengths and len(lengths) == 32  # safetensors pads headers to a multiple of 8
    load_checkpoint(path)


@pytest.mark.parametrize("legacy", [False, True])
def test_torch_files_are_named_whatever_their_first_bytes(tmp_path, model, legacy):
    torch.save(model.state_dict(), tmp_path / "m.pt", _use_new_zipfile_serialization=not legacy)
    kind = "pickle" if legacy else "zip"
    with pytest.raises(CheckpointError, match=f"PyTorch pickle/zip file \\({kind} format\\).*import-faceformer"):
        load_checkpoint(tmp_path / "m.pt")


def test_sniff_format():
    from talkface.model.checkpoint import sniff_format

    header = b'{"a":1}'.ljust(128)
    assert sniff_format(len(header).to_bytes(8, "little") + header[:1], 8 + 128) == "safetensors"
    assert sniff_format(len(header).to_bytes(8, "little") + header[:1], 100) == "unknown"  # length past the end
    assert sniff_format(b"\x80\x02\x8a\x0a" + b"\0" * 5, 1000) == "pickle"
    assert sniff_format(b"\x80\x07" + b"\0" * 7, 1000) == "unknown"
    assert sniff_format(b"PK\x03\x04" + b"\0" * 5, 1000) == "zip"
    assert sniff_format(b"", 0) == "unknown"


def rewrite_header(src, dst, edit):
    data = src.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8: 8 + n])
    edit(header)
    raw = json.dumps(header).encode()
    dst.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])


@pytest.mark.parametrize("damage", ["no_offsets", "offsets_text", "offsets_reversed", "entry_not_object"])
def test_damaged_header_is_a_checkpoint_error(tmp_path, model, damage):
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    name = next(k for k in json.loads(path.read_bytes()[8: 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]])
                if k != "__metadata__")

    def edit(header):
        if damage == "no_offsets":
            del header[name]["data_offsets"]
        elif damage == "offsets_text":
            header[name]["data_offsets"] = ["0", "4"]
        elif damage == "offsets_reversed":
            header[name]["data_offsets"] = header[name]["data_offsets"][::-1]
        else:
            header[name] = 5

    rewrite_header(path, tmp_path / "bad.safetensors", edit)
    with pytest.raises(CheckpointError, match="damaged header"):
        read_checkpoint_meta(tmp_path / "bad.safetensors")


def test_truncated_json_header(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    (tmp_path / "bad.safetensors").write_bytes(data[:8] + data[8: 8 + n // 2].ljust(n) + data[8 + n:])
    with pytest.raises(CheckpointError, match="unreadable header"):
        read_checkpoint_meta(tmp_path / "bad.safetensors")


# --------------------------------------------------------------------------------------------- issue 15
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_checkpoint_loads_as_float32(tmp_path, model, dtype):
    """A checkpoint halved to save space runs as float32: the same output as the float32 model whose weights
    went through the same rounding (the oracle), not a dtype error in the forward pass."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = save_checkpoint(tmp_path / "m.safetensors", model)
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    halved = {k: v.to(dtype) if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    save_file(halved, str(tmp_path / "half.safetensors"), metadata=metadata)
    loaded, _ = load_checkpoint(tmp_path / "half.safetensors")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in halved.items()})
    audio, template, style = torch.randn(8000) * 0.1, torch.randn(10, 3), torch.tensor([1.0, 0.0, 0.0])
    assert torch.equal(model.generate(audio, template, style), loaded.generate(audio, template, style))


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_checkpoint_file_follows_the_umask(tmp_path, model, mask):
    import os

    previous = os.umask(mask)
    try:
        path = save_checkpoint(tmp_path / "m.safetensors", model)
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # safetensors alone leaves 0600 (issue 15)
