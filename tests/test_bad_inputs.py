"""Bad inputs (issue #10): every command answers a bad file or flag with one clear line and leaves nothing behind.

Each table row runs one CLI command on one bad input and checks: the exit code (1 for a TalkfaceError,
2 for a usage error), that the message names the file or flag, what is wrong and what to do (key
words), that no Python traceback is shown, and that no partial output is left (nothing new under the
case's folder, no temporary ``.tmp-`` siblings anywhere). Unusual but valid audio (8-bit, 32-bit float,
6 channels) must work. A few cases run ``python -m talkface`` in a real subprocess; Ctrl-C during
``prepare`` keeps the finished clips and a rerun completes an identical dataset.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from talkface.cli import app

runner = CliRunner()
V = 10  # vertices of the tiny raw folders used by the prepare cases
SR = 16000


# --------------------------------------------------------------------------------------------- helpers


def speech(seconds: float = 1.0, rate: int = SR, channels: int = 1) -> np.ndarray:
    """A speech-like test signal: a 150 Hz buzz with a syllable-rate envelope, (S,) or (S, C) float32."""
    t = np.arange(int(seconds * rate)) / rate
    x = 0.4 * np.sin(2 * np.pi * 150 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    x = x.astype(np.float32)
    return x if channels == 1 else np.stack([x * (0.5 + 0.1 * c) for c in range(channels)], axis=1)


def write_wav(path: Path, audio: np.ndarray, subtype: str = "PCM_16", rate: int = SR) -> Path:
    sf.write(str(path), audio, rate, subtype=subtype, format="WAV")
    return path


def motion(frames: int = 30, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(1, V, 3)).astype(np.float32) * 0.1
    return base + 0.001 * rng.normal(size=(frames, V, 3)).astype(np.float32)


class Exploit:
    """Pickles as a call of os.system that would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, (f"touch {self.marker}",)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime ns)} of every file and folder under ``root``."""
    out = {}
    for p in root.rglob("*"):
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_size if p.is_file() else -1, st.st_mtime_ns if p.is_file() else 0)
    return out


def temp_leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp-" in p.name]


def error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert lines, f"no 'error:' line in:\n{output}"
    return lines[0]


def readonly_folder(d: Path) -> Path:
    """A folder nothing can be written into: chmod 555, or /sys when root ignores permissions."""
    if os.geteuid() != 0:
        ro = d / "readonly"
        ro.mkdir()
        ro.chmod(0o555)
        return ro
    probe = Path("/sys/.talkface-probe")
    try:
        probe.write_text("x")
    except OSError:
        return Path("/sys")
    probe.unlink()
    pytest.skip("running as root with no read-only folder to write into")


# --------------------------------------------------------------------------------------------- fixtures


@dataclass
class Env:
    root: Path
    data: Path  # a prepared dataset (synthetic corpus: faces + regions)
    run: Path  # a run folder with best.safetensors and the dataset's templates
    wav: Path  # good speech
    anim_npz: Path  # a talkface animation with faces (for render)
    folder_raw: Path  # `prepare folder` input: spk_01/02 wav + npy, templates/spk.npy
    ff_raw: Path  # `prepare faceformer` input: wav/, vertices_npy/, templates.pkl
    speaker: str
    num_vertices: int


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    from talkface.data import load_prepared, prepare_vocaset
    from talkface.io.animation import Animation, save_animation
    from talkface.model import TalkFaceModel, tiny_encoder_config
    from talkface.model.checkpoint import save_checkpoint
    from talkface.synthetic import write_synthetic_vocaset
    from talkface.train import build_model_config
    from talkface.train.runs import copy_run_assets

    root = tmp_path_factory.mktemp("bad_inputs")
    write_synthetic_vocaset(root / "raw", num_speakers=2, num_sentences=3, use_espeak=False)
    prepare_vocaset(root / "raw", root / "data", splits=root / "raw" / "splits.toml")
    dataset = load_prepared(root / "data")
    config = build_model_config(dataset.meta, preset=None, overrides={"feature_dim": 16, "period": 3})
    import torch

    torch.manual_seed(0)
    model = TalkFaceModel(config, tiny_encoder_config())
    (root / "run").mkdir()
    save_checkpoint(root / "run" / "best.safetensors", model)
    copy_run_assets(root / "data", root / "run")

    clip = dataset.load_clip(dataset.clips[0])
    anim = root / "anim.npz"
    save_animation(anim, Animation(clip.vertices[:4], 30.0, dataset.faces))
    wav = write_wav(root / "speech.wav", speech())

    folder = root / "folder_raw"
    (folder / "templates").mkdir(parents=True)
    np.save(folder / "templates" / "spk.npy", motion(1)[0])
    for n in ("01", "02"):
        write_wav(folder / f"spk_{n}.wav", speech(1.0, 22050), rate=22050)
        np.save(folder / f"spk_{n}.npy", motion(30, int(n)))

    ff = root / "ff_raw"
    (ff / "wav").mkdir(parents=True)
    (ff / "vertices_npy").mkdir()
    write_wav(ff / "wav" / "spk_01.wav", speech())
    np.save(ff / "vertices_npy" / "spk_01.npy", motion(60).reshape(60, -1))
    (ff / "templates.pkl").write_bytes(pickle.dumps({"spk": motion(1)[0]}, protocol=2))
    return Env(root, root / "data", root / "run", wav, anim, folder, ff, config.speakers[0], config.num_vertices)


def copy_folder_raw(env: Env, d: Path) -> Path:
    raw = d / "raw"
    shutil.copytree(env.folder_raw, raw)
    return raw


def copy_ff_raw(env: Env, d: Path) -> Path:
    raw = d / "ff"
    shutil.copytree(env.ff_raw, raw)
    return raw


def copy_data(env: Env, d: Path, split_of: Callable[[dict], Any] | None = None) -> Path:
    data = d / "data"
    shutil.copytree(env.data, data)
    if split_of is not None:
        entries = [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines()]
        lines = [json.dumps(e | {"split": split_of(e)}) for e in entries]
        (data / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return data


# --------------------------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    build: Callable[[Env, Path], list[str]]
    code: int
    words: tuple[str, ...]
    # applied after ``build`` and the snapshots, for the command only (a full disk, say): fn(monkeypatch, d)
    patch: Callable[[pytest.MonkeyPatch, Path], None] | None = None


CASES: list[Any] = []


def case(command: str, code: int, *words: str, marks: tuple = (),
         patch: Callable[[pytest.MonkeyPatch, Path], None] | None = None) -> Callable:
    """Register ``fn(env, d) -> argv`` as a bad-input row; ``words`` must all appear in the message."""

    def register(fn: Callable[[Env, Path], list[str]]) -> Callable:
        CASES.append(pytest.param(command, Case(fn, code, words, patch), id=f"{command}-{fn.__name__}",
                                  marks=marks))
        return fn

    return register


# ---- audio, through `animate` (one model, one style)


def animate_args(env: Env, audio: Path, d: Path, *extra: str, style: str | None = None) -> list[str]:
    return ["animate", str(audio), "--checkpoint", str(env.run), "--style", style or env.speaker,
            "--out", str(d / "out.npz"), "--device", "cpu", *extra]


@case("animate", 2, "speech.wav", "does not exist")
def missing_audio(env: Env, d: Path) -> list[str]:
    return animate_args(env, d / "speech.wav", d)


@case("animate", 1, "empty.wav", "not a readable audio file", "expected wav")
def empty_audio_file(env: Env, d: Path) -> list[str]:
    (d / "empty.wav").write_bytes(b"")
    return animate_args(env, d / "empty.wav", d)


@case("animate", 1, "corrupt.wav", "not a readable audio file", "expected wav")
def corrupt_audio(env: Env, d: Path) -> list[str]:
    (d / "corrupt.wav").write_bytes(b"RIFF" + np.random.default_rng(1).bytes(3000))
    return animate_args(env, d / "corrupt.wav", d)


@case("animate", 1, "cut.wav", "truncated", "copy")
def truncated_audio(env: Env, d: Path) -> list[str]:
    data = env.wav.read_bytes()
    (d / "cut.wav").write_bytes(data[: len(data) // 2])  # the header still declares 1 s
    return animate_args(env, d / "cut.wav", d)


@case("animate", 1, "notes.wav", "not a readable audio file", "expected wav")
def text_file_named_wav(env: Env, d: Path) -> list[str]:
    (d / "notes.wav").write_text("this is a text file, not audio\n" * 20)
    return animate_args(env, d / "notes.wav", d)


@case("animate", 1, "zero.wav", "no samples", "expected speech")
def zero_sample_audio(env: Env, d: Path) -> list[str]:
    return animate_args(env, write_wav(d / "zero.wav", np.zeros(0, np.float32)), d)


@case("animate", 1, "one.wav", "too short", "at least")
def one_sample_audio(env: Env, d: Path) -> list[str]:
    return animate_args(env, write_wav(d / "one.wav", np.full(1, 0.5, np.float32)), d)


@case("animate", 1, "silence.wav", "silent", "speech")
def silent_audio(env: Env, d: Path) -> list[str]:
    return animate_args(env, write_wav(d / "silence.wav", np.zeros(SR, np.float32)), d)


@case("animate", 1, "nan.wav", "nan", "re-export")
def nan_audio(env: Env, d: Path) -> list[str]:
    x = speech()
    x[100:200] = np.nan
    return animate_args(env, write_wav(d / "nan.wav", x, "FLOAT"), d)


# ---- styles and templates


@case("animate", 1, "unknown style", "nobody", "valid styles")
def unknown_style(env: Env, d: Path) -> list[str]:
    return animate_args(env, env.wav, d, style="nobody")


@case("animate", 1, "--style", "names no speaker", "valid speakers")
def empty_style_mix(env: Env, d: Path) -> list[str]:
    return animate_args(env, env.wav, d, style=" , ")


@case("animate", 1, "--style", "sum to 0.5", "must sum to 1")
def style_weights_not_one(env: Env, d: Path) -> list[str]:
    return animate_args(env, env.wav, d, style=f"{env.speaker}:0.5")


@case("animate", 1, "--style", "not a number")
def style_weight_not_a_number(env: Env, d: Path) -> list[str]:
    return animate_args(env, env.wav, d, style=f"{env.speaker}:lots")


@case("animate", 1, "small.npy", "10 vertices", "expects", "model's topology")
def template_wrong_vertex_count(env: Env, d: Path) -> list[str]:
    np.save(d / "small.npy", motion(1)[0])
    return animate_args(env, env.wav, d, "--template", str(d / "small.npy"))


@case("animate", 1, "nan_tmpl.npy", "nan")
def template_with_nan(env: Env, d: Path) -> list[str]:
    t = np.zeros((env.num_vertices, 3), np.float32)
    t[5, 1] = np.nan
    np.save(d / "nan_tmpl.npy", t)
    return animate_args(env, env.wav, d, "--template", str(d / "nan_tmpl.npy"))


@case("animate", 1, "rank3.npy", "shape", "expected (v, 3)")
def template_wrong_rank(env: Env, d: Path) -> list[str]:
    np.save(d / "rank3.npy", np.zeros((2, env.num_vertices, 3), np.float32))
    return animate_args(env, env.wav, d, "--template", str(d / "rank3.npy"))


@case("animate", 1, "objects.npy", "cannot read mesh", "object")
def template_object_dtype(env: Env, d: Path) -> list[str]:
    np.save(d / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return animate_args(env, env.wav, d, "--template", str(d / "objects.npy"))


# ---- checkpoints


@case("animate", 1, "cut.safetensors", "truncated", "copy the checkpoint again")
def truncated_checkpoint(env: Env, d: Path) -> list[str]:
    data = (env.run / "best.safetensors").read_bytes()
    (d / "cut.safetensors").write_bytes(data[: len(data) // 2])
    return _checkpoint_args(env, d, d / "cut.safetensors")


def _with_metadata(src: Path, dest: Path, **changes: str) -> Path:
    data = src.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    header["__metadata__"].update(changes)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    dest.write_bytes(len(new).to_bytes(8, "little") + new + data[8 + length:])
    return dest


def _checkpoint_args(env: Env, d: Path, checkpoint: Path) -> list[str]:
    args = animate_args(env, env.wav, d)
    args[args.index("--checkpoint") + 1] = str(checkpoint)
    return args


@case("animate", 1, "future.safetensors", "format version 7", "upgrade talkface")
def checkpoint_of_another_format_version(env: Env, d: Path) -> list[str]:
    ckpt = _with_metadata(env.run / "best.safetensors", d / "future.safetensors", format_version="7")
    return _checkpoint_args(env, d, ckpt)


@case("animate", 1, "other.safetensors", "expected a talkface checkpoint", "another program")
def checkpoint_of_another_program(env: Env, d: Path) -> list[str]:
    ckpt = _with_metadata(env.run / "best.safetensors", d / "other.safetensors", format="pt")
    return _checkpoint_args(env, d, ckpt)


@case("animate", 1, "random.pth", "not a safetensors file", "expected a talkface")
def random_pth_as_checkpoint(env: Env, d: Path) -> list[str]:
    (d / "random.pth").write_bytes(np.random.default_rng(2).bytes(5000))
    return _checkpoint_args(env, d, d / "random.pth")


@case("animate", 1, "model.pth", "pytorch", "import-faceformer")
def torch_pth_as_checkpoint(env: Env, d: Path) -> list[str]:
    import torch

    torch.save({"w": torch.zeros(3)}, d / "model.pth")
    return _checkpoint_args(env, d, d / "model.pth")


@case("animate", 1, "emptyrun", "neither best.safetensors", "talkface train")
def run_folder_without_checkpoint(env: Env, d: Path) -> list[str]:
    (d / "emptyrun").mkdir()
    return _checkpoint_args(env, d, d / "emptyrun")


# ---- outputs of animate


@case("animate", 1, "out.npz", "already exists", "--overwrite")
def animate_existing_output(env: Env, d: Path) -> list[str]:
    (d / "out.npz").write_bytes(b"precious")
    return animate_args(env, env.wav, d)


@case("animate", 1, "out.npz", "is a folder", "expected a file")
def animate_output_is_a_folder(env: Env, d: Path) -> list[str]:
    (d / "out.npz").mkdir()
    return animate_args(env, env.wav, d)


@case("animate", 1, "out.npz", "writable", "choose")
def animate_output_in_readonly_folder(env: Env, d: Path) -> list[str]:
    args = animate_args(env, env.wav, d)
    args[args.index("--out") + 1] = str(readonly_folder(d) / "out.npz")
    return args


@case("animate", 1, "out.txt", "unknown output format", ".npz")
def animate_unknown_output_format(env: Env, d: Path) -> list[str]:
    args = animate_args(env, env.wav, d)
    args[args.index("--out") + 1] = str(d / "out.txt")
    return args


# ---- prepare (your own folder, FaceFormer's layout)


def prepare_args(raw: Path, d: Path, *extra: str, source: str = "folder") -> list[str]:
    fps = ["--fps", "30"] if source == "folder" else []
    return ["prepare", source, str(raw), str(d / "out"), *fps, *extra]


@case("prepare", 1, "spk_01.wav", "not a readable audio file", "re-export")
def prepare_empty_wav(env: Env, d: Path) -> list[str]:
    raw = copy_folder_raw(env, d)
    (raw / "spk_01.wav").write_bytes(b"")
    return prepare_args(raw, d)


@case("prepare", 1, "spk_01.wav", "not a readable audio file", "re-export")
def prepare_text_named_wav(env: Env, d: Path) -> list[str]:
    raw = copy_folder_raw(env, d)
    (raw / "spk_01.wav").write_text("hello\n" * 50)
    return prepare_args(raw, d)


@case("prepare", 1, "spk_01.wav", "truncated", "copy")
def prepare_truncated_wav(env: Env, d: Path) -> list[str]:
    raw = copy_folder_raw(env, d)
    data = (raw / "spk_01.wav").read_bytes()
    (raw / "spk_01.wav").write_bytes(data[: len(data) * 2 // 3])
    return prepare_args(raw, d)


@case("prepare", 1, "spk_01", "no samples", "re-export")
def prepare_zero_sample_wav(env: Env, d: Path) -> list[str]:
    raw = copy_folder_raw(env, d)
    write_wav(raw / "spk_01.wav", np.zeros(0, np.float32))
    return prepare_args(raw, d)


@case("prepare", 1, "spk_01", "silent", "re-export")
def prepare_silent_wav(env: Env, d: Path) -> list[str]:
    raw = copy_folder_raw(env, d)
    write_wav(raw / "spk_01.wav", np.zeros(SR, np.float32))
    return prepare_args(raw, d)


@case("prepare", 1, "spk_01", "nan", "re-export")
def prepare_nan_wav(env: Env, d: Path) -> list[str]:
    raw = copy_folder_raw(env, d)
    x = speech()
    x[5] = np.nan
    write_wav(raw / "spk_01.wav", x, "FLOAT")
    return prepare_args(raw, d)


@case("prepare", 1, "spk_01", "nan", "motion")
def prepare_npy_with_nan(env: Env, d: Path) -> list[str]:
    raw = copy_folder_raw(env, d)
    m = motion(30)
    m[3, 2, 0] = np.inf
    np.save(raw / "spk_01.npy", m)
    return prepare_args(raw, d)


@case("prepare", 1, "spk_01", "9 vertices", "template's mesh")
def prepare_npy_wrong_vertex_count(env: Env, d: Path) -> list[str]:
    raw = copy_folder_raw(env, d)
    np.save(raw / "spk_01.npy", motion(30)[:, :9])
    return prepare_args(raw, d)


@case("prepare", 1, "spk_01.npy", "shape", "expected (t, v*3)")
def prepare_npy_wrong_rank(env: Env, d: Path) -> list[str]:
    raw = copy_folder_raw(env, d)
    np.save(raw / "spk_01.npy", np.zeros(90, np.float32))
    return prepare_args(raw, d)


@case("prepare", 1, "spk_01.npy", "object", "float")
def prepare_npy_object_dtype(env: Env, d: Path) -> list[str]:
    raw = copy_folder_raw(env, d)
    np.save(raw / "spk_01.npy", np.array([[1, "a", None]], dtype=object), allow_pickle=True)
    return prepare_args(raw, d)


@case("prepare", 1, "templates", "no templates folder", "one neutral mesh per speaker")
def prepare_clips_but_no_templates(env: Env, d: Path) -> list[str]:
    raw = copy_folder_raw(env, d)
    shutil.rmtree(raw / "templates")
    return prepare_args(raw, d)


@case("prepare", 1, "no clip", "<speaker>_<sentence>.wav")
def prepare_folder_with_no_clips(env: Env, d: Path) -> list[str]:
    raw = copy_folder_raw(env, d)
    for p in [*raw.glob("*.wav"), *raw.glob("*.npy")]:
        p.unlink()
    return prepare_args(raw, d)


@case("prepare", 1, "spk.npy", "nan", "template")
def prepare_template_with_nan(env: Env, d: Path) -> list[str]:
    raw = copy_folder_raw(env, d)
    t = motion(1)[0]
    t[0, 0] = np.nan
    np.save(raw / "templates" / "spk.npy", t)
    return prepare_args(raw, d)


@case("prepare", 1, "templates.pkl", "posix.system", "not read")
def prepare_pickle_that_runs_code(env: Env, d: Path) -> list[str]:
    raw = copy_ff_raw(env, d)
    (raw / "templates.pkl").write_bytes(pickle.dumps({"spk": Exploit(d / "pwned")}, protocol=2))
    return prepare_args(raw, d, source="faceformer")


@case("prepare", 1, "templates.pkl", "expected a dict", "list")
def prepare_pickle_of_a_list(env: Env, d: Path) -> list[str]:
    raw = copy_ff_raw(env, d)
    (raw / "templates.pkl").write_bytes(pickle.dumps([motion(1)[0]], protocol=2))
    return prepare_args(raw, d, source="faceformer")


@case("prepare", 1, "templates.pkl", "template of spk", "expected float vertices")
def prepare_pickle_of_strings(env: Env, d: Path) -> list[str]:
    raw = copy_ff_raw(env, d)
    (raw / "templates.pkl").write_bytes(pickle.dumps({"spk": "a face"}, protocol=2))
    return prepare_args(raw, d, source="faceformer")


@case("prepare", 1, "templates.pkl", "not a readable data pickle", "re-download")
def prepare_truncated_pickle(env: Env, d: Path) -> list[str]:
    raw = copy_ff_raw(env, d)
    data = (raw / "templates.pkl").read_bytes()
    (raw / "templates.pkl").write_bytes(data[: len(data) // 2])
    return prepare_args(raw, d, source="faceformer")


@case("prepare", 1, "out", "not empty", "--overwrite")
def prepare_into_foreign_folder(env: Env, d: Path) -> list[str]:
    (d / "out").mkdir()
    (d / "out" / "notes.txt").write_text("mine")
    return prepare_args(env.folder_raw, d)


@case("prepare", 1, "out", "is a file", "folder")
def prepare_output_is_a_file(env: Env, d: Path) -> list[str]:
    (d / "out").write_text("mine")
    return prepare_args(env.folder_raw, d)


@case("prepare", 1, "cannot create", "choose")
def prepare_into_readonly_folder(env: Env, d: Path) -> list[str]:
    return ["prepare", "folder", str(env.folder_raw), str(readonly_folder(d) / "out"), "--fps", "30"]


@case("prepare", 2, "--fps", "0")
def prepare_fps_zero(env: Env, d: Path) -> list[str]:
    return ["prepare", "folder", str(env.folder_raw), str(d / "out"), "--fps", "0"]


@case("prepare", 1, "splits.toml", "split")
def prepare_broken_split_file(env: Env, d: Path) -> list[str]:
    (d / "splits.toml").write_text("[train\nspeakers = 3\n")
    return prepare_args(env.folder_raw, d, "--splits", str(d / "splits.toml"))


# ---- train


def train_args(data: Path, d: Path, *extra: str) -> list[str]:
    return ["train", str(data), "--out", str(d / "run"), "--encoder", "tiny", "--epochs", "1", "--device", "cpu",
            *extra]


@case("train", 1, "run", "not empty", "--overwrite")
def train_run_folder_not_empty(env: Env, d: Path) -> list[str]:
    (d / "run").mkdir()
    (d / "run" / "notes.txt").write_text("keep me")
    return train_args(env.data, d)


@case("train", 1, "run", "not a folder", "--out")
def train_run_folder_is_a_file(env: Env, d: Path) -> list[str]:
    (d / "run").write_text("keep me")
    return train_args(env.data, d)


@case("train", 1, "run", "choose")
def train_run_folder_in_readonly_folder(env: Env, d: Path) -> list[str]:
    args = train_args(env.data, d)
    args[args.index("--out") + 1] = str(readonly_folder(d) / "run")
    return args


def _gamma_case(value: str) -> None:
    def build(env: Env, d: Path) -> list[str]:
        return train_args(env.data, d, f"--gamma={value}")

    build.__name__ = f"train_gamma_{value.replace('-', 'minus')}"
    if value == "nan":  # refused while the flag is parsed (issue 15), before the range check of TrainConfig
        case("train", 2, "--gamma", "finite")(build)
    else:
        case("train", 1, "gamma", "(0, 10]", "1e-3")(build)


for _value in ("0", "-1", "nan", "100"):
    _gamma_case(_value)


@case("train", 1, "loss", "bogus", "softdtw")
def train_unknown_loss(env: Env, d: Path) -> list[str]:
    return train_args(env.data, d, "--loss", "bogus")


@case("train", 2, "--batch-size", "greater than or equal to 1")
def train_batch_size_zero(env: Env, d: Path) -> list[str]:
    return train_args(env.data, d, "--batch-size", "0")


@case("train", 1, "train split is empty", "split file")
def train_with_empty_train_split(env: Env, d: Path) -> list[str]:
    return train_args(copy_data(env, d, lambda e: "test" if e["split"] == "train" else e["split"]), d)


@case("train", 1, "dataset.json", "talkface prepare")
def train_on_a_folder_that_is_not_prepared(env: Env, d: Path) -> list[str]:
    (d / "raw").mkdir()
    (d / "raw" / "a.wav").write_bytes(b"x")
    return train_args(d / "raw", d)


@case("train", 1, "manifest.jsonl", "did not finish", "rerun")
def train_on_an_interrupted_prepare(env: Env, d: Path) -> list[str]:
    data = copy_data(env, d)
    (data / "manifest.jsonl").unlink()
    return train_args(data, d)


@case("train", 1, "templates.npz", "cannot read an npz", "prepare the dataset again")
def train_on_corrupt_templates(env: Env, d: Path) -> list[str]:
    data = copy_data(env, d)
    (data / "templates.npz").write_bytes(b"PK\x03\x04garbage")
    return train_args(data, d)


@case("train", 1, "--device cuda", "cpu")
def train_on_missing_cuda(env: Env, d: Path) -> list[str]:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    return train_args(env.data, d)[:-2] + ["--device", "cuda"]


# ---- evaluate


def evaluate_args(data: Path, pred: Path, *extra: str) -> list[str]:
    return ["evaluate", "--data", str(data), "--pred", str(pred), "--split", "test", *extra]


def _pred_folder(env: Env, d: Path, change: Callable[[np.ndarray], np.ndarray] | None = None) -> Path:
    from talkface.data import load_prepared

    dataset = load_prepared(env.data)
    pred = d / "pred"
    pred.mkdir()
    for info in dataset.split("test"):
        v = dataset.load_clip(info).vertices
        np.save(pred / f"{info.name}.npy", (change(v) if change else v).reshape(v.shape[0], -1))
    return pred


@case("evaluate", 1, "split 'test' is empty", "prepare")
def evaluate_empty_split(env: Env, d: Path) -> list[str]:
    pred = _pred_folder(env, d)
    return evaluate_args(copy_data(env, d, lambda e: None if e["split"] == "test" else e["split"]), pred)


@case("evaluate", 1, "no prediction for clip", "_condition_")
def evaluate_missing_prediction(env: Env, d: Path) -> list[str]:
    (d / "pred").mkdir()
    return evaluate_args(env.data, d / "pred")


@case("evaluate", 1, ".npy", "nan")
def evaluate_prediction_with_nan(env: Env, d: Path) -> list[str]:
    def poison(v: np.ndarray) -> np.ndarray:
        v = v.copy()
        v[0, 0, 0] = np.nan
        return v

    return evaluate_args(env.data, _pred_folder(env, d, poison))


@case("evaluate", 1, ".npy", "100 vertices", "dataset's mesh")
def evaluate_prediction_wrong_vertex_count(env: Env, d: Path) -> list[str]:
    return evaluate_args(env.data, _pred_folder(env, d, lambda v: v[:, :100]))


@case("evaluate", 1, "unknown split", "train")
def evaluate_unknown_split(env: Env, d: Path) -> list[str]:
    return evaluate_args(env.data, _pred_folder(env, d))[:-2] + ["--split", "dev"]


@case("evaluate", 1, "report.json", "is a folder")
def evaluate_report_is_a_folder(env: Env, d: Path) -> list[str]:
    pred = _pred_folder(env, d)
    (d / "report.json").mkdir()
    return evaluate_args(env.data, pred, "--report", str(d / "report.json"))


# ---- render (animation files, flags, outputs)


def render_args(anim: Path, d: Path, *extra: str) -> list[str]:
    return ["render", str(anim), "--out", str(d / "out.mp4"), "--size", "64", *extra]


@case("render", 2, "--fps", "0")
def render_fps_zero(env: Env, d: Path) -> list[str]:
    return render_args(env.anim_npz, d, "--fps", "0")


@case("render", 1, "size", "7", "even number")
def render_size_seven(env: Env, d: Path) -> list[str]:
    return render_args(env.anim_npz, d)[:-2] + ["--size", "7"]


@case("render", 1, "background", "#336699")
def render_bad_background(env: Env, d: Path) -> list[str]:
    return render_args(env.anim_npz, d, "--background", "mauve-ish")


@case("render", 1, "nan.npy", "nan")
def render_npy_with_nan(env: Env, d: Path) -> list[str]:
    np.save(d / "nan.npy", np.full((3, env.num_vertices * 3), np.nan, np.float32))
    return render_args(d / "nan.npy", d, "--fps", "30", "--template", str(env.anim_npz))


@case("render", 1, "rank1.npy", "shape", "expected (t, v, 3)")
def render_npy_wrong_rank(env: Env, d: Path) -> list[str]:
    np.save(d / "rank1.npy", np.zeros(12, np.float32))
    return render_args(d / "rank1.npy", d, "--fps", "30")


@case("render", 1, "objects.npy", "object")
def render_npy_object_dtype(env: Env, d: Path) -> list[str]:
    np.save(d / "objects.npy", np.array([None, 1], dtype=object), allow_pickle=True)
    return render_args(d / "objects.npy", d, "--fps", "30")


@case("render", 1, "noframerate.npy", "--fps")
def render_npy_without_fps(env: Env, d: Path) -> list[str]:
    np.save(d / "noframerate.npy", np.zeros((3, env.num_vertices * 3), np.float32))
    return render_args(d / "noframerate.npy", d)


@case("render", 1, "head.npz", f"has {3114} vertices", "expects 10")
def render_template_wrong_vertex_count(env: Env, d: Path) -> list[str]:
    with np.load(env.anim_npz) as z:
        np.savez(d / "head.npz", vertices=z["vertices"][0], faces=z["faces"])
    np.save(d / "small.npy", np.zeros((3, V * 3), np.float32))
    return render_args(d / "small.npy", d, "--fps", "30", "--template", str(d / "head.npz"))


@case("render", 1, "cut.npz", "cannot read animation")
def render_truncated_npz(env: Env, d: Path) -> list[str]:
    data = env.anim_npz.read_bytes()
    (d / "cut.npz").write_bytes(data[: len(data) // 2])
    return render_args(d / "cut.npz", d)


@case("render", 1, "out.mp4", "already exists", "--overwrite")
def render_existing_output(env: Env, d: Path) -> list[str]:
    (d / "out.mp4").write_bytes(b"precious")
    return render_args(env.anim_npz, d)


@case("render", 1, "out.mp4", "is a folder")
def render_output_is_a_folder(env: Env, d: Path) -> list[str]:
    (d / "out.mp4").mkdir()
    return render_args(env.anim_npz, d)


@case("render", 1, "out.mp4", "choose", marks=(pytest.mark.render,))
def render_output_in_readonly_folder(env: Env, d: Path) -> list[str]:
    args = render_args(env.anim_npz, d)
    args[args.index("--out") + 1] = str(readonly_folder(d) / "out.mp4")
    return args


@case("render", 1, "notes.wav", "audio", marks=(pytest.mark.render,))
def render_with_text_file_as_audio(env: Env, d: Path) -> list[str]:
    (d / "notes.wav").write_text("not audio\n" * 30)
    return render_args(env.anim_npz, d, "--audio", str(d / "notes.wav"))


# ---- import-faceformer


def import_args(pth: Path, d: Path, *extra: str) -> list[str]:
    return ["import-faceformer", str(pth), "--speakers", "A B", "--out", str(d / "ckpt"), *extra]


@case("import-faceformer", 1, "random.pth", "not a readable pytorch checkpoint", "vocaset.pth")
def import_random_bytes(env: Env, d: Path) -> list[str]:
    (d / "random.pth").write_bytes(np.random.default_rng(3).bytes(4000))
    return import_args(d / "random.pth", d)


@case("import-faceformer", 1, "evil.pth", "posix.system", "plain state_dict")
def import_pickle_that_runs_code(env: Env, d: Path) -> list[str]:
    import torch

    torch.save({"w": Exploit(d / "pwned")}, d / "evil.pth")
    return import_args(d / "evil.pth", d)


@case("import-faceformer", 1, "other.pth", "not a faceformer state_dict", "missing")
def import_state_dict_of_another_model(env: Env, d: Path) -> list[str]:
    import torch

    torch.save({"fc.weight": torch.zeros(2, 2)}, d / "other.pth")
    return import_args(d / "other.pth", d)


@case("import-faceformer", 1, "list.pth", "expected a state_dict", "list")
def import_unexpected_structure(env: Env, d: Path) -> list[str]:
    import torch

    torch.save([torch.zeros(2)], d / "list.pth")
    return import_args(d / "list.pth", d)


@case("import-faceformer", 1, "cut.pth", "not a readable pytorch checkpoint")
def import_truncated_pth(env: Env, d: Path) -> list[str]:
    import torch

    torch.save({"fc.weight": torch.zeros(64, 64)}, d / "full.pth")
    data = (d / "full.pth").read_bytes()
    (d / "cut.pth").write_bytes(data[: len(data) // 2])
    return import_args(d / "cut.pth", d)


@case("import-faceformer", 1, "best.safetensors", "already exists", "--overwrite")
def import_existing_output(env: Env, d: Path) -> list[str]:
    (d / "ckpt").mkdir()
    (d / "ckpt" / "best.safetensors").write_bytes(b"precious")
    (d / "x.pth").write_bytes(b"x")
    return import_args(d / "x.pth", d)


@case("import-faceformer", 1, "preset", "vocaset")
def import_unknown_preset(env: Env, d: Path) -> list[str]:
    import torch

    torch.save({"fc.weight": torch.zeros(2, 2)}, d / "other.pth")
    return import_args(d / "other.pth", d, "--preset", "mystery")


@case("import-faceformer", 2, "--speakers")
def import_no_speakers(env: Env, d: Path) -> list[str]:
    (d / "x.pth").write_bytes(b"x")
    return ["import-faceformer", str(d / "x.pth"), "--speakers", " , ", "--out", str(d / "ckpt")]


# ---- issue 15: classes of failures, each fixed by one mechanism (the class number is in the comment)


def _rewrite_checkpoint(src: Path, dest: Path, change: Callable[[dict], dict]) -> Path:
    """A copy of a checkpoint with its tensors changed (metadata kept): NaN weights, float16, ..."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(src), "pt") as f:
        metadata = f.metadata()
    save_file(change(load_file(str(src))), str(dest), metadata=metadata)
    return dest


def _run_copy(env: Env, d: Path, change: Callable[[dict], dict] | None = None) -> Path:
    run = d / "run"
    shutil.copytree(env.run, run)
    if change is not None:
        _rewrite_checkpoint(env.run / "best.safetensors", run / "best.safetensors", change)
    return run


# class 1: file identification (sniff_format), through the CLI


@case("animate", 1, "nooffsets.safetensors", "damaged header", "data_offsets")
def checkpoint_entry_without_data_offsets(env: Env, d: Path) -> list[str]:
    data = (env.run / "best.safetensors").read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    name = next(k for k in header if k != "__metadata__")
    del header[name]["data_offsets"]
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    (d / "nooffsets.safetensors").write_bytes(len(new).to_bytes(8, "little") + new + data[8 + length:])
    return _checkpoint_args(env, d, d / "nooffsets.safetensors")


@case("animate", 1, "head.safetensors", "truncated", "copy the checkpoint again")
def checkpoint_cut_inside_its_json_header(env: Env, d: Path) -> list[str]:
    (d / "head.safetensors").write_bytes((env.run / "best.safetensors").read_bytes()[:200])
    return _checkpoint_args(env, d, d / "head.safetensors")


@case("import-faceformer", 1, "best.safetensors", "is a safetensors file", "--checkpoint")
def import_a_talkface_checkpoint(env: Env, d: Path) -> list[str]:
    return import_args(env.run / "best.safetensors", d)


# class 2: never write over an input (fileio.check_paths), --overwrite or not


@case("animate", 1, "--template", "head.npz", "input")
def animate_output_is_the_template(env: Env, d: Path) -> list[str]:
    with np.load(env.anim_npz) as z:
        np.savez(d / "head.npz", vertices=z["vertices"][0], faces=z["faces"])
    args = animate_args(env, env.wav, d, "--template", str(d / "head.npz"), "--overwrite")
    args[args.index("--out") + 1] = str(d / "head.npz")
    return args


@case("animate", 1, "head.npz", "--template", "input")  # typer resolves --out: the target is named
def animate_output_is_a_symlink_to_the_template(env: Env, d: Path) -> list[str]:
    with np.load(env.anim_npz) as z:
        np.savez(d / "head.npz", vertices=z["vertices"][0], faces=z["faces"])
    (d / "link.npz").symlink_to(d / "head.npz")
    args = animate_args(env, env.wav, d, "--template", str(d / "head.npz"), "--overwrite")
    args[args.index("--out") + 1] = str(d / "link.npz")
    return args


@case("animate", 1, "a.npz", "same path", "distinct")
def animate_two_inputs_with_one_stem(env: Env, d: Path) -> list[str]:
    for sub in ("x", "y"):
        (d / sub).mkdir()
        shutil.copy(env.wav, d / sub / "a.wav")
    args = animate_args(env, d / "x" / "a.wav", d)
    args.insert(2, str(d / "y" / "a.wav"))
    args[args.index("--out") + 1] = str(d / "res")
    return args


@case("animate", 1, "--checkpoint", "run", "input")
def animate_into_the_run_folder_over_its_templates(env: Env, d: Path) -> list[str]:
    run = _run_copy(env, d)
    args = _checkpoint_args(env, d, run)
    args[args.index("--out") + 1] = str(run / "templates.npz")
    return args + ["--overwrite"]


@case("animate", 1, "a.npz", "same path", "input 2")
def animate_one_input_given_twice(env: Env, d: Path) -> list[str]:
    shutil.copy(env.wav, d / "a.wav")
    args = animate_args(env, d / "a.wav", d)
    args.insert(2, str(d / "." / "a.wav"))
    args[args.index("--out") + 1] = str(d / "res")
    return args


@case("animate", 1, "a.npz", "same path", "a.flac")
def animate_two_formats_of_one_recording(env: Env, d: Path) -> list[str]:
    shutil.copy(env.wav, d / "a.wav")
    sf.write(str(d / "a.flac"), speech(), SR, format="FLAC")
    args = animate_args(env, d / "a.wav", d, "--render")
    args.insert(2, str(d / "a.flac"))
    args[args.index("--out") + 1] = str(d / "res")
    return args


@case("evaluate", 1, "--report", "dataset.json", "--data")
def evaluate_report_over_the_datasets_own_file(env: Env, d: Path) -> list[str]:
    data = copy_data(env, d)
    return evaluate_args(data, _pred_folder(env, d), "--report", str(data / "dataset.json"))


@case("evaluate", 1, "--csv", "scores.csv", "same path")
def evaluate_report_named_like_its_csv(env: Env, d: Path) -> list[str]:
    return evaluate_args(env.data, _pred_folder(env, d), "--report", str(d / "scores.csv"))


@case("evaluate", 1, "--plot", "--pred", "input")
def evaluate_plot_over_a_prediction(env: Env, d: Path) -> list[str]:
    pred = _pred_folder(env, d)
    return evaluate_args(env.data, pred, "--plot", str(next(pred.iterdir())))


@case("train", 1, "--out", "DATA_DIR", "input")
def train_into_the_dataset_folder(env: Env, d: Path) -> list[str]:
    data = copy_data(env, d)
    args = train_args(data, d, "--overwrite")
    args[args.index("--out") + 1] = str(data)
    return args


@case("prepare", 1, "OUT_DIR", "RAW_DIR", "input")
def prepare_into_a_folder_of_the_raw_data(env: Env, d: Path) -> list[str]:
    raw = copy_folder_raw(env, d)
    return ["prepare", "folder", str(raw), str(raw / "templates"), "--fps", "30", "--overwrite"]


@case("render", 1, "anim.npz", "ANIMATION", "input")  # typer resolves --out: the target is named
def render_output_is_a_symlink_to_the_animation(env: Env, d: Path) -> list[str]:
    shutil.copy(env.anim_npz, d / "anim.npz")
    (d / "view.mp4").symlink_to(d / "anim.npz")
    return render_args(d / "anim.npz", d, "--overwrite")[:3] + [str(d / "view.mp4"), "--overwrite"]


@case("import-faceformer", 1, "best.safetensors", "PTH", "input")
def import_over_its_own_input(env: Env, d: Path) -> list[str]:
    (d / "ckpt").mkdir()
    (d / "ckpt" / "best.safetensors").write_bytes(b"x")
    return import_args(d / "ckpt" / "best.safetensors", d, "--overwrite")


# class 3: finite numbers (config.check_number) from flags, config files and data files


@case("prepare", 2, "--fps", "finite")
def prepare_fps_nan(env: Env, d: Path) -> list[str]:
    return ["prepare", "folder", str(env.folder_raw), str(d / "out"), "--fps", "nan"]


@case("prepare", 2, "--source-fps", "finite")
def prepare_source_fps_infinite(env: Env, d: Path) -> list[str]:
    return prepare_args(env.folder_raw, d, "--source-fps", "inf")


@case("train", 2, "--mse-weight", "finite")
def train_mse_weight_nan(env: Env, d: Path) -> list[str]:
    return train_args(env.data, d, "--loss", "softdtw+mse", "--mse-weight", "nan")


@case("train", 2, "--lr", "finite")
def train_lr_infinite(env: Env, d: Path) -> list[str]:
    return train_args(env.data, d, "--lr", "inf")


@case("train", 1, "mse_weight", "finite", "recipe.toml")
def train_config_file_with_nan_weight(env: Env, d: Path) -> list[str]:
    (d / "recipe.toml").write_text('loss = "softdtw+mse"\nmse_weight = nan\n')
    return train_args(env.data, d, "--config", str(d / "recipe.toml"))


@case("train", 1, "dropout", "finite")
def train_config_file_with_nan_dropout(env: Env, d: Path) -> list[str]:
    (d / "recipe.toml").write_text("[model]\ndropout = nan\n")
    return train_args(env.data, d, "--config", str(d / "recipe.toml"))


@case("render", 1, "nanfps.npz", "fps", "finite")
def render_animation_whose_fps_is_nan(env: Env, d: Path) -> list[str]:
    with np.load(env.anim_npz) as z:
        np.savez(d / "nanfps.npz", vertices=z["vertices"], faces=z["faces"], fps=np.float64("nan"))
    return render_args(d / "nanfps.npz", d)


@case("render", 1, "negfps.npz", "fps", "finite")
def render_animation_whose_fps_is_minus_infinity(env: Env, d: Path) -> list[str]:
    with np.load(env.anim_npz) as z:
        np.savez(d / "negfps.npz", vertices=z["vertices"], faces=z["faces"], fps=np.float64("-inf"))
    return render_args(d / "negfps.npz", d)


@case("render", 2, "--fps", "finite")
def render_fps_flag_nan(env: Env, d: Path) -> list[str]:
    return render_args(env.anim_npz, d, "--fps", "nan")


@case("animate", 1, "run", "nan", "weights")
def animate_with_nan_weights(env: Env, d: Path) -> list[str]:
    run = _run_copy(env, d, lambda t: {k: v.fill_(float("nan")) if v.is_floating_point() else v
                                       for k, v in t.items()})
    return _checkpoint_args(env, d, run)


@case("evaluate", 1, "run", "nan", "weights")
def evaluate_checkpoint_with_infinite_weights(env: Env, d: Path) -> list[str]:
    run = _run_copy(env, d, lambda t: {k: v.fill_(float("inf")) if v.is_floating_point() else v
                                       for k, v in t.items()})
    return ["evaluate", "--data", str(env.data), "--checkpoint", str(run), "--split", "test", "--device", "cpu"]


@case("evaluate", 1, "dataset.json", "fps", "finite")
def evaluate_dataset_with_nan_fps(env: Env, d: Path) -> list[str]:
    data = copy_data(env, d)
    meta = json.loads((data / "dataset.json").read_text())
    (data / "dataset.json").write_text(json.dumps(meta | {"fps": float("nan")}))
    return evaluate_args(data, _pred_folder(env, d))


# class 4: every reader goes through fileio.reading: typed error naming the file


@case("animate", 1, "empty.npy", "cannot read mesh", "ends early")
def template_npy_of_zero_bytes(env: Env, d: Path) -> list[str]:
    (d / "empty.npy").write_bytes(b"")
    return animate_args(env, env.wav, d, "--template", str(d / "empty.npy"))


@case("prepare", 1, "spk_01.npy", "ends early", "re-export")
def prepare_npy_of_zero_bytes(env: Env, d: Path) -> list[str]:
    raw = copy_folder_raw(env, d)
    (raw / "spk_01.npy").write_bytes(b"")
    return prepare_args(raw, d)


@case("render", 1, "listmeta.npz", "meta", "json object")
def render_npz_whose_meta_is_a_list(env: Env, d: Path) -> list[str]:
    with np.load(env.anim_npz) as z:
        np.savez(d / "listmeta.npz", vertices=z["vertices"], faces=z["faces"], fps=30.0, meta=np.array("[1, 2]"))
    return render_args(d / "listmeta.npz", d)


@case("render", 1, "badmeta.npz", "meta", "json")
def render_npz_whose_meta_is_not_json(env: Env, d: Path) -> list[str]:
    with np.load(env.anim_npz) as z:
        np.savez(d / "badmeta.npz", vertices=z["vertices"], faces=z["faces"], fps=30.0, meta=np.array("{oops"))
    return render_args(d / "badmeta.npz", d)


@case("train", 1, "templates.npz", "symlink loop")
def train_on_templates_that_are_a_symlink_loop(env: Env, d: Path) -> list[str]:
    data = copy_data(env, d)
    (data / "templates.npz").unlink()
    (data / "templates.npz").symlink_to(data / "templates.npz")
    return train_args(data, d)


@case("animate", 1, "faces.npy", "cannot read", "run")
def run_folder_with_truncated_faces(env: Env, d: Path) -> list[str]:
    run = _run_copy(env, d)
    (run / "faces.npy").write_bytes((run / "faces.npy").read_bytes()[:100])
    return _checkpoint_args(env, d, run)


@case("evaluate", 1, "masks.npz", "cannot read", "region file")
def evaluate_masks_truncated_npz(env: Env, d: Path) -> list[str]:
    np.savez(d / "full.npz", lips=np.arange(50))
    (d / "masks.npz").write_bytes((d / "full.npz").read_bytes()[:60])
    (d / "full.npz").unlink()
    return evaluate_args(env.data, _pred_folder(env, d), "--masks", str(d / "masks.npz"))


@case("import-faceformer", 1, "gap.pth", "layers.0", "vocaset.pth")
def import_state_dict_missing_a_layer(env: Env, d: Path) -> list[str]:
    import torch

    state = {"audio_feature_map.weight": torch.zeros(64, 768), "vertice_map.weight": torch.zeros(64, 15069),
             "vertice_map_r.weight": torch.zeros(15069, 64), "obj_vector.weight": torch.zeros(64, 2),
             "transformer_decoder.layers.1.linear1.weight": torch.zeros(128, 64)}  # layer 0 is missing
    torch.save(state, d / "gap.pth")
    return import_args(d / "gap.pth", d)


@case("animate", 1, "listmeta.safetensors", "talkface metadata", "json object")
def checkpoint_metadata_that_is_a_json_list(env: Env, d: Path) -> list[str]:
    ckpt = _with_metadata(env.run / "best.safetensors", d / "listmeta.safetensors", talkface="[1, 2]")
    return _checkpoint_args(env, d, ckpt)


@case("train", 1, "state.pt", "cannot read the training state", "missing entry", "--overwrite")
def train_resume_from_a_state_without_its_position(env: Env, d: Path) -> list[str]:
    import torch

    (d / "run").mkdir()
    torch.save({"format": "talkface-train-state", "version": 1}, d / "run" / "state.pt")
    return train_args(env.data, d, "--resume")


# class 5: flags validated where they are parsed


@case("train", 2, "--device", "gpu", "cuda")
def train_device_gpu(env: Env, d: Path) -> list[str]:
    return train_args(env.data, d)[:-2] + ["--device", "gpu"]


@case("animate", 2, "--device", "gpu", "cuda")
def animate_device_gpu(env: Env, d: Path) -> list[str]:
    return animate_args(env, env.wav, d)[:-2] + ["--device", "gpu"]


@case("evaluate", 2, "--device", "cuda0")
def evaluate_device_without_colon(env: Env, d: Path) -> list[str]:
    return evaluate_args(env.data, _pred_folder(env, d), "--device", "cuda0")


@case("train", 2, "--seed", "greater than or equal to 0")
def train_seed_minus_one(env: Env, d: Path) -> list[str]:
    return train_args(env.data, d, "--seed", "-1")


@case("train", 2, "--seed", "less than or equal to 4294967295")
def train_seed_beyond_numpy(env: Env, d: Path) -> list[str]:
    return train_args(env.data, d, "--seed", str(2**32))


@case("train", 1, "seed", "-1", "recipe.toml")
def train_config_file_with_negative_seed(env: Env, d: Path) -> list[str]:
    (d / "recipe.toml").write_text("seed = -1\n")
    return train_args(env.data, d, "--config", str(d / "recipe.toml"))


@case("render", 1, "--compare", "gt25.npz", "25 fps")
def render_compare_at_another_fps(env: Env, d: Path) -> list[str]:
    with np.load(env.anim_npz) as z:
        np.savez(d / "gt25.npz", vertices=z["vertices"], faces=z["faces"], fps=25.0)
    return render_args(env.anim_npz, d, "--compare", str(d / "gt25.npz"))


@case("render", 1, "nan.wav", "nan", "re-export")
def render_audio_with_nan_samples(env: Env, d: Path) -> list[str]:
    x = speech()
    x[300:400] = np.nan
    return render_args(env.anim_npz, d, "--audio", str(write_wav(d / "nan.wav", x, "FLOAT")))


# class 6: validate everything before writing; nothing half-made on failure


@case("evaluate", 1, "--plot-clip", "nosuchclip")
def evaluate_bad_plot_clip_writes_no_report(env: Env, d: Path) -> list[str]:
    return evaluate_args(env.data, _pred_folder(env, d), "--report", str(d / "report.json"), "--plot",
                         str(d / "plot.png"), "--plot-clip", "nosuchclip")


@case("train", 1, ".npz", "cannot read", "prepare the dataset again")
def train_on_a_damaged_clip_leaves_no_run_folder(env: Env, d: Path) -> list[str]:
    data = copy_data(env, d)
    from talkface.data import load_prepared

    clip = load_prepared(data).split("train")[-1].path  # read during the first epoch, after the run folder is made
    clip.write_bytes(clip.read_bytes()[:300])
    return train_args(data, d)


# class 7: render --compare with a prepared clip as ground truth looks for faces everywhere before giving up


@case("render", 1, "--compare", "no faces", "--template")
def render_faceless_prediction_against_a_clip_of_a_faceless_dataset(env: Env, d: Path) -> list[str]:
    from talkface.data import load_prepared

    data = copy_data(env, d)
    (data / "faces.npy").unlink()
    clip = load_prepared(data).clips[0]
    np.save(d / "pred.npy", np.zeros((5, env.num_vertices * 3), np.float32))
    return render_args(d / "pred.npy", d, "--fps", "30", "--compare", str(clip.path))


# class 8: the generator states a resume restores are read through the same typed path


@case("train", 1, "state.pt", "cannot read the training state", "'numpy'", "--overwrite")
def train_resume_from_a_state_with_damaged_generator_states(env: Env, d: Path) -> list[str]:
    import torch

    (d / "run").mkdir()
    position = {"epoch": 1, "step": 1, "global_step": 1, "order": [0, 1], "epoch_losses": [1.0]}
    torch.save({"format": "talkface-train-state", "version": 1, "position": position,
                "rng": {"data": [3, [1] * 625, None], "python": [3, [1] * 625, None]}, "encoder_config": "{}"},
               d / "run" / "state.pt")
    return train_args(env.data, d, "--resume")


# ---- issue 29 (reliability, third pass): classes 1, 2, 3 and 5, one mechanism each (stream's rows are below)
# class 1: a full disk, a read-only file system or a used-up quota while writing: fileio.writing maps what
# every writer raises (OSError, safetensors' SafetensorError, torch.save's OSError, ffmpeg's words) to one
# OutputError that names the file, says what happened and what to do, the old output left as it was


def full_disk(only: str = "") -> Callable[[pytest.MonkeyPatch, Path], None]:
    """A patch: every file talkface writes (whose name contains ``only``) lands on /dev/full.

    atomic_path's temporary sibling becomes a symlink to /dev/full, where the kernel itself answers every
    write with ENOSPC: no root, no mount. safetensors writes its own temporary file and renames it (over
    the symlink), so its ``save_file`` raises what it raises on a real full disk (seen on a 64 KiB tmpfs).
    """

    def patch(mp: pytest.MonkeyPatch, d: Path) -> None:
        import talkface.io.fileio as fileio

        real_temp, real_chmod = fileio.temp_path_for, os.chmod

        def on_full_device(path: Path) -> Path:
            tmp = real_temp(path)
            if only in path.name:
                tmp.symlink_to("/dev/full")
            return tmp

        def chmod(path: Any, mode: int, *args: Any, **kwargs: Any) -> None:
            if os.path.realpath(path) != "/dev/full":  # a writer that wrote nothing must not chmod the device
                real_chmod(path, mode, *args, **kwargs)

        mp.setattr(fileio, "temp_path_for", on_full_device)
        mp.setattr(os, "chmod", chmod)
        if only == "" or "safetensors" in only:
            failing_safetensors(errno.ENOSPC)(mp, d)

    return patch


def failing_safetensors(number: int) -> Callable[[pytest.MonkeyPatch, Path], None]:
    """A patch: safetensors' save_file fails as it does on a full (28), read-only (30) or denied (13) disk."""

    def patch(mp: pytest.MonkeyPatch, d: Path) -> None:
        import safetensors.torch
        from safetensors import SafetensorError

        import talkface.model.feature_cache as feature_cache

        def save_file(*args: Any, **kwargs: Any) -> None:
            raise SafetensorError(f"Error while serializing: I/O error: {os.strerror(number)} (os error {number})")

        mp.setattr(safetensors.torch, "save_file", save_file)
        mp.setattr(feature_cache, "save_file", save_file)

    return patch


def failing_savefig(number: int) -> Callable[[pytest.MonkeyPatch, Path], None]:
    """A patch: matplotlib's savefig fails with ``number`` (EDQUOT: the user's quota is used up)."""

    def patch(mp: pytest.MonkeyPatch, d: Path) -> None:
        from matplotlib.figure import Figure

        def savefig(self: Any, *args: Any, **kwargs: Any) -> None:
            raise OSError(number, os.strerror(number))

        mp.setattr(Figure, "savefig", savefig)

    return patch


@case("animate", 1, "--out", "out.npz", "disk is full", "unchanged", "free some space", patch=full_disk())
def animate_npz_onto_a_full_disk_keeps_the_old_file(env: Env, d: Path) -> list[str]:
    (d / "out.npz").write_bytes(b"precious")
    return animate_args(env, env.wav, d, "--overwrite")


@case("animate", 1, "out.glb", "disk is full", "another output path", patch=full_disk())
def animate_glb_onto_a_full_disk(env: Env, d: Path) -> list[str]:
    args = animate_args(env, env.wav, d)
    args[args.index("--out") + 1] = str(d / "out.glb")
    return args


@case("animate", 1, "out.npz", "disk is full", "unchanged", patch=full_disk())
def animate_npz_from_a_checkpoint_file_onto_a_full_disk(env: Env, d: Path) -> list[str]:
    (d / "out.npz").write_bytes(b"precious")
    return _checkpoint_args(env, d, env.run / "best.safetensors") + ["--overwrite"]


@case("evaluate", 1, "--report", "report.json", "disk is full", "unchanged", patch=full_disk())
def evaluate_report_onto_a_full_disk_keeps_the_old_report(env: Env, d: Path) -> list[str]:
    pred = _pred_folder(env, d)
    (d / "report.json").write_text('{"old": true}')
    return evaluate_args(env.data, pred, "--report", str(d / "report.json"), "--overwrite")


@case("evaluate", 1, "--plot", "lips.png", "quota", "free some of your space", patch=failing_savefig(errno.EDQUOT))
def evaluate_plot_over_quota(env: Env, d: Path) -> list[str]:
    return evaluate_args(env.data, _pred_folder(env, d), "--plot", str(d / "lips.png"))


@case("train", 1, "--out", "last.safetensors", "disk is full", "free some space",
      patch=failing_safetensors(errno.ENOSPC))
def train_checkpoint_onto_a_full_disk_keeps_the_old_run(env: Env, d: Path) -> list[str]:
    shutil.copytree(env.run, d / "run")
    return train_args(env.data, d, "--overwrite")


@case("train", 1, "read-only", "another output path", patch=failing_safetensors(errno.EROFS))
def train_checkpoint_onto_a_read_only_file_system(env: Env, d: Path) -> list[str]:
    return train_args(env.data, d)


@case("train", 1, "state.pt", "disk is full", patch=full_disk("state.pt"))
def train_state_onto_a_full_disk(env: Env, d: Path) -> list[str]:  # torch.save hides ENOSPC: write_with finds it
    return train_args(env.data, d)


@case("train", 1, "--out", "disk is full", patch=full_disk())
def train_onto_a_full_disk(env: Env, d: Path) -> list[str]:
    return train_args(env.data, d)


@case("prepare", 1, "disk is full", "free some space", patch=full_disk())
def prepare_onto_a_full_disk(env: Env, d: Path) -> list[str]:
    return prepare_args(env.folder_raw, d)


@case("render", 1, "out.mp4", "disk is full", "unchanged", marks=(pytest.mark.render,), patch=full_disk())
def render_mp4_onto_a_full_disk_keeps_the_old_video(env: Env, d: Path) -> list[str]:  # ffmpeg writes /dev/full
    (d / "out.mp4").write_bytes(b"precious")
    return render_args(env.anim_npz, d, "--overwrite")


# class 2: one reading helper for every dataset reader (fileio.reading_folder + path_kind): an OS error while
# listing or reading a dataset names the file it came from; a symlink loop is no longer "missing" or skipped


def _loop(path: Path) -> None:
    """Replace ``path`` by a symlink to itself (a loop: every stat fails with ELOOP)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    path.symlink_to(path.name)


def copy_voca_raw(env: Env, d: Path) -> Path:
    raw = d / "voca"
    shutil.copytree(env.root / "raw", raw)
    return raw


@case("prepare", 1, "RAW_DIR", "spk_01.wav", "symlink loop", "run prepare again")
def prepare_biwi_with_a_symlink_loop_in_wav(env: Env, d: Path) -> list[str]:
    raw = copy_ff_raw(env, d)
    _loop(raw / "wav" / "spk_01.wav")
    return prepare_args(raw, d, source="biwi")


@case("prepare", 1, "spk_01.npy", "symlink loop")
def prepare_biwi_with_a_symlink_loop_in_vertices(env: Env, d: Path) -> list[str]:
    raw = copy_ff_raw(env, d)
    _loop(raw / "vertices_npy" / "spk_01.npy")
    return prepare_args(raw, d, source="biwi")


@case("prepare", 1, "data_verts.npy", "symlink loop", "VOCASET")
def prepare_vocaset_whose_vertices_are_a_symlink_loop(env: Env, d: Path) -> list[str]:
    raw = copy_voca_raw(env, d)
    _loop(raw / "data_verts.npy")
    return prepare_args(raw, d, source="vocaset")


@case("prepare", 1, "splits.toml", "symlink loop")
def prepare_vocaset_whose_split_file_is_a_symlink_loop(env: Env, d: Path) -> list[str]:  # was silently ignored
    raw = copy_voca_raw(env, d)
    _loop(raw / "splits.toml")
    return prepare_args(raw, d, source="vocaset")


@case("prepare", 1, "templates.pkl", "is a folder", "expected a file")
def prepare_vocaset_whose_templates_are_a_folder(env: Env, d: Path) -> list[str]:
    raw = copy_voca_raw(env, d)
    (raw / "templates.pkl").unlink()
    (raw / "templates.pkl").mkdir()
    return prepare_args(raw, d, source="vocaset")


@case("prepare", 1, "spk_01.npy", "symlink loop")
def prepare_folder_whose_motion_is_a_symlink_loop(env: Env, d: Path) -> list[str]:  # was skipped as "no motion"
    raw = copy_folder_raw(env, d)
    _loop(raw / "spk_01.npy")
    return prepare_args(raw, d)


@case("prepare", 1, "frame_0001.obj", "symlink loop")
def prepare_folder_with_a_symlink_loop_among_mesh_frames(env: Env, d: Path) -> list[str]:
    raw = copy_folder_raw(env, d)
    (raw / "spk_01.npy").unlink()
    (raw / "spk_01").mkdir()
    (raw / "spk_01" / "frame_0000.obj").write_text("v 0 0 0\n" * V)
    _loop(raw / "spk_01" / "frame_0001.obj")
    return prepare_args(raw, d)


@case("prepare", 1, "spk_01.wav", "is a folder")
def prepare_folder_whose_wav_is_a_folder(env: Env, d: Path) -> list[str]:
    raw = copy_folder_raw(env, d)
    (raw / "spk_01.wav").unlink()
    (raw / "spk_01.wav").mkdir()
    return prepare_args(raw, d)


@case("prepare", 1, "spk_01.wav", "permission denied")
def prepare_folder_with_an_unreadable_wav(env: Env, d: Path) -> list[str]:
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode; the symlink-loop and folder rows cover this helper")
    raw = copy_folder_raw(env, d)
    (raw / "spk_01.wav").chmod(0)
    return prepare_args(raw, d)


@case("train", 1, "DATA_DIR", "symlink loop", "prepare the dataset again")
def train_on_a_dataset_whose_clip_is_a_symlink_loop(env: Env, d: Path) -> list[str]:
    from talkface.data import load_prepared

    data = copy_data(env, d)
    _loop(load_prepared(data).split("train")[0].path)
    return train_args(data, d)


@case("evaluate", 1, "--data", "manifest.jsonl", "symlink loop")
def evaluate_a_dataset_whose_manifest_is_a_symlink_loop(env: Env, d: Path) -> list[str]:
    data = copy_data(env, d)
    _loop(data / "manifest.jsonl")
    return evaluate_args(data, _pred_folder(env, d))


@case("animate", 1, "--checkpoint", "templates.npz", "symlink loop", "copy the run folder again")
def animate_with_a_run_whose_templates_are_a_symlink_loop(env: Env, d: Path) -> list[str]:  # was "no template"
    run = _run_copy(env, d)
    _loop(run / "templates.npz")
    return _checkpoint_args(env, d, run)


# class 3: refusals name the file and the flag (faces checked where they are read; the CLI adds the flag)


def _with_faces(env: Env, path: Path, faces: np.ndarray, *, frames: bool = True) -> Path:
    with np.load(env.anim_npz) as z:
        vertices = z["vertices"] if frames else z["vertices"][0]
    np.savez(path, vertices=vertices, faces=faces, **({"fps": 30.0} if frames else {}))
    return path


@case("render", 1, "ANIMATION", "far.npz", "face indices span", "another mesh")
def render_animation_whose_faces_leave_the_mesh(env: Env, d: Path) -> list[str]:
    return render_args(_with_faces(env, d / "far.npz", np.array([[0, 1, 10**6]], np.int32)), d)


@case("render", 1, "--template", "head.npz", "face indices span", "-1")
def render_template_whose_faces_are_negative(env: Env, d: Path) -> list[str]:
    head = _with_faces(env, d / "head.npz", np.array([[0, 1, -1]], np.int32), frames=False)
    np.save(d / "pred.npy", np.load(env.anim_npz)["vertices"].reshape(4, -1))
    return render_args(d / "pred.npy", d, "--fps", "30", "--template", str(head))


@case("render", 1, "--compare", "gt.npz", "face indices span")
def render_compare_whose_faces_leave_the_mesh(env: Env, d: Path) -> list[str]:
    return render_args(env.anim_npz, d, "--compare", str(_with_faces(env, d / "gt.npz", np.array([[0, 1, 99999]]))))


@case("animate", 1, "--checkpoint", "faces.npy", "face indices span", "copy the run folder again")
def animate_with_a_run_whose_faces_leave_the_mesh(env: Env, d: Path) -> list[str]:
    run = _run_copy(env, d)
    np.save(run / "faces.npy", np.array([[0, 1, env.num_vertices]], np.int32))
    return _checkpoint_args(env, d, run)


@case("evaluate", 1, "--split", "dev", "train")
def evaluate_names_the_split_flag(env: Env, d: Path) -> list[str]:
    return evaluate_args(env.data, _pred_folder(env, d))[:-2] + ["--split", "dev"]


@case("import-faceformer", 1, "--preset", "mystery")
def import_names_the_preset_flag(env: Env, d: Path) -> list[str]:
    (d / "x.pth").write_bytes(b"x")
    return import_args(d / "x.pth", d, "--preset", "mystery")


# class 5: inputs are the files a command reads (fileio.Reads, declared by train.runs.run_reads and
# data.dataset.dataset_reads); other files in an input folder may be replaced with --overwrite, and only then


def _eval_run_args(env: Env, run: Path, *extra: str) -> list[str]:
    return ["evaluate", "--data", str(env.data), "--checkpoint", str(run), "--split", "test", "--device", "cpu",
            *extra]


@case("evaluate", 1, "--report", "eval.json", "already exists", "--overwrite")
def evaluate_report_in_the_run_folder_again_without_overwrite(env: Env, d: Path) -> list[str]:
    run = _run_copy(env, d)
    (run / "eval.json").write_text('{"old": true}')  # an earlier evaluate's report, kept beside the run
    return _eval_run_args(env, run, "--report", str(run / "eval.json"))


@case("evaluate", 1, "--report", "best.safetensors", "--checkpoint", "never replaces inputs")
def evaluate_report_over_the_runs_checkpoint(env: Env, d: Path) -> list[str]:
    run = _run_copy(env, d)
    return _eval_run_args(env, run, "--report", str(run / "best.safetensors"), "--overwrite")


@case("evaluate", 1, "--csv", "templates.npz", "--checkpoint", "input")
def evaluate_csv_over_the_runs_templates(env: Env, d: Path) -> list[str]:
    run = _run_copy(env, d)
    return _eval_run_args(env, run, "--report", str(d / "r.json"), "--csv", str(run / "templates.npz"), "--overwrite")


def test_a_report_kept_in_the_run_folder_is_refreshed_with_overwrite(env: Env, tmp_path: Path) -> None:
    """Issue 29: `evaluate --checkpoint RUN --report RUN/eval.json` twice; evaluate never reads eval.json."""
    run = _run_copy(env, tmp_path)
    args = _eval_run_args(env, run, "--report", str(run / "eval.json"))
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    (run / "eval.json").write_text('{"stale": true}')
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1 and "--overwrite" in error_line(refused.output)
    assert json.loads((run / "eval.json").read_text()) == {"stale": True}
    again = runner.invoke(app, [*args, "--overwrite"])
    assert again.exit_code == 0, again.output
    assert "lve" in json.loads((run / "eval.json").read_text())  # a fresh report replaced the stale one
    anim = _checkpoint_args(env, tmp_path, run)  # an animation kept beside the run, refreshed the same way
    anim[anim.index("--out") + 1] = str(run / "take.npz")
    assert runner.invoke(app, anim).exit_code == 0
    assert runner.invoke(app, anim).exit_code == 1
    assert runner.invoke(app, [*anim, "--overwrite"]).exit_code == 0
    assert not temp_leftovers(run)


def test_training_goes_on_when_the_feature_cache_cannot_write(env: Env, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache write on a full disk warns once; the run finishes with its checkpoints (class 1's choice)."""
    import safetensors.torch
    from safetensors import SafetensorError

    import talkface.model.feature_cache as feature_cache

    def full(*args: Any, **kwargs: Any) -> None:  # only the cache's writes fail; checkpoints still write
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(feature_cache, "save_file", full)
    with pytest.warns(RuntimeWarning, match="stops writing"):
        result = runner.invoke(app, train_args(env.data, tmp_path, "--epochs", "2"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "best.safetensors").is_file() and safetensors.torch.load_file(
        str(tmp_path / "run" / "best.safetensors"))
    assert not list((tmp_path / "run" / "feature_cache").glob("*.safetensors"))


def over_the_templates_beside_a_checkpoint_file(env: Env, d: Path) -> list[str]:
    run = _run_copy(env, d)
    args = _checkpoint_args(env, d, run / "best.safetensors")
    args[args.index("--out") + 1] = str(run / "templates.npz")
    return args + ["--overwrite"]


def test_animate_never_writes_over_the_templates_beside_a_checkpoint_file(env: Env, tmp_path: Path) -> None:
    """animate reads RUN/templates.npz also for --checkpoint RUN/best.safetensors; only the file counted before."""
    run_case(env, tmp_path, Case(over_the_templates_beside_a_checkpoint_file, 1, ("--checkpoint", "templates.npz",
                                                                                  "input")))


def test_stream_never_writes_over_the_templates_beside_a_checkpoint_file(env: Env, tmp_path: Path) -> None:
    build = _as_stream(over_the_templates_beside_a_checkpoint_file)
    run_case(env, tmp_path, Case(build, 1, ("--checkpoint", "templates.npz", "input")))


@case("evaluate", 1, "--report", "manifest.jsonl", "--data", "input")
def evaluate_report_over_the_datasets_manifest(env: Env, d: Path) -> list[str]:
    data = copy_data(env, d)
    return evaluate_args(data, _pred_folder(env, d), "--report", str(data / "manifest.jsonl"), "--overwrite")


@case("train", 1, "--out", "clips", "holds", "DATA_DIR")
def train_into_the_datasets_clip_folder(env: Env, d: Path) -> list[str]:
    data = copy_data(env, d)
    args = train_args(data, d, "--overwrite")
    args[args.index("--out") + 1] = str(data / "clips")
    return args


# ---- stream (issue 18): whatever `animate` refuses, `stream` refuses the same way

# animate rows whose input stream has no counterpart (stream takes one source, not a folder of them)
NOT_FOR_STREAM: dict[str, str] = {
    "animate_two_inputs_with_one_stem": "several inputs",
    "animate_one_input_given_twice": "several inputs",
    "animate_two_formats_of_one_recording": "several inputs",
}


def _as_stream(build: Callable[[Env, Path], list[str]]) -> Callable[[Env, Path], list[str]]:
    """The same bad input through `talkface stream SOURCE ... --out`, with the row's words."""

    def stream_build(env: Env, d: Path) -> list[str]:
        args = build(env, d)
        assert args[0] == "animate", args
        return ["stream", *args[1:]]

    stream_build.__name__ = build.__name__
    return stream_build


for _param in [p for p in CASES if p.values[0] == "animate"]:
    _row = _param.values[1]
    if _row.build.__name__ not in NOT_FOR_STREAM:
        case("stream", _row.code, *_row.words, patch=_row.patch)(_as_stream(_row.build))


@case("stream", 2, "--frames/--out", "give --frames")
def stream_without_an_output(env: Env, d: Path) -> list[str]:
    return ["stream", str(env.wav), "--checkpoint", str(env.run), "--style", env.speaker]


@case("stream", 2, "--hop-ms", "number of ms or 'auto'")
def stream_hop_not_a_number(env: Env, d: Path) -> list[str]:
    return ["stream", str(env.wav), "--checkpoint", str(env.run), "--style", env.speaker, "--out",
            str(d / "out.npz"), "--hop-ms", "soon"]


@case("stream", 2, "--lookahead-ms", "nan")
def stream_lookahead_nan(env: Env, d: Path) -> list[str]:
    return ["stream", str(env.wav), "--checkpoint", str(env.run), "--style", env.speaker, "--out",
            str(d / "out.npz"), "--lookahead-ms", "nan"]


@case("stream", 1, "frames.bin", "already exists", "--overwrite")
def stream_existing_frames_file(env: Env, d: Path) -> list[str]:
    (d / "frames.bin").write_bytes(b"precious")
    return ["stream", str(env.wav), "--checkpoint", str(env.run), "--style", env.speaker, "--frames",
            str(d / "frames.bin")]


# ---- stream, issue 29 class 4 (helper "live"): every numeric flag in range, every output's folder checked
# before any audio is read; the subprocess tests with stdin left open are in "stream, real processes" below


def stream_args(env: Env, d: Path, *extra: str) -> list[str]:
    return ["stream", str(env.wav), "--checkpoint", str(env.run), "--style", env.speaker, *extra]


@case("stream", 2, "--memory-s", ">= 0", "0 means unbounded")
def stream_memory_below_zero(env: Env, d: Path) -> list[str]:
    return stream_args(env, d, "--out", str(d / "o.npz"), "--memory-s", "-1")


@case("stream", 2, "--memory-s", "<= 3600")
def stream_memory_beyond_an_hour(env: Env, d: Path) -> list[str]:
    return stream_args(env, d, "--out", str(d / "o.npz"), "--memory-s", "1e6")


@case("stream", 2, "--lookahead-ms", ">= 0")
def stream_lookahead_below_zero(env: Env, d: Path) -> list[str]:
    return stream_args(env, d, "--out", str(d / "o.npz"), "--lookahead-ms", "-5")


@case("stream", 2, "--lookahead-ms", "<= 600000")
def stream_lookahead_beyond_ten_minutes(env: Env, d: Path) -> list[str]:
    return stream_args(env, d, "--out", str(d / "o.npz"), "--lookahead-ms", "1e9")


@case("stream", 2, "--context-ms", ">= 0")
def stream_context_below_zero(env: Env, d: Path) -> list[str]:
    return stream_args(env, d, "--out", str(d / "o.npz"), "--context-ms", "-1")


@case("stream", 2, "--context-ms", "finite")
def stream_context_infinite(env: Env, d: Path) -> list[str]:
    return stream_args(env, d, "--out", str(d / "o.npz"), "--context-ms", "inf")


@case("stream", 2, "--hop-ms", "(0, 10000]", "auto")
def stream_hop_zero(env: Env, d: Path) -> list[str]:
    return stream_args(env, d, "--out", str(d / "o.npz"), "--hop-ms", "0")


@case("stream", 2, "--hop-ms", "(0, 10000]")
def stream_hop_beyond_ten_seconds(env: Env, d: Path) -> list[str]:
    return stream_args(env, d, "--out", str(d / "o.npz"), "--hop-ms", "60000")


@case("stream", 2, "--realtime", "stdin")
def stream_realtime_on_stdin(env: Env, d: Path) -> list[str]:
    return ["stream", "-", "--checkpoint", str(env.run), "--style", env.speaker, "--out", str(d / "o.npz"),
            "--realtime"]


@case("stream", 1, "--frames", "notes.txt", "is a file, not a folder")
def stream_frames_under_a_file(env: Env, d: Path) -> list[str]:
    (d / "notes.txt").write_text("x")
    return stream_args(env, d, "--frames", str(d / "notes.txt" / "sub" / "frames.bin"))


@case("stream", 1, "--out", "notes.txt", "is a file, not a folder")
def stream_out_under_a_file(env: Env, d: Path) -> list[str]:
    (d / "notes.txt").write_text("x")
    return stream_args(env, d, "--out", str(d / "notes.txt" / "o.npz"))


@case("stream", 1, "--frames", "not writable", "another output folder")
def stream_frames_in_a_read_only_folder(env: Env, d: Path) -> list[str]:
    return stream_args(env, d, "--frames", str(readonly_folder(d) / "frames.bin"))


@case("stream", 1, "frames", "is a folder")
def stream_frames_is_a_folder(env: Env, d: Path) -> list[str]:
    (d / "frames").mkdir()
    return stream_args(env, d, "--frames", str(d / "frames"))


@case("stream", 1, "--out", "--frames")
def stream_out_and_frames_are_one_file(env: Env, d: Path) -> list[str]:
    return stream_args(env, d, "--frames", str(d / "o.npz"), "--out", str(d / "o.npz"))


# --------------------------------------------------------------------------------------------- running a row


def run_case(env: Env, d: Path, row: Case) -> str:
    args = row.build(env, d)
    before, shared_before = snapshot(d), snapshot(env.root)
    with pytest.MonkeyPatch.context() as patched:
        if row.patch is not None:
            row.patch(patched, d)
        result = runner.invoke(app, args)
    output = result.output
    assert result.exit_code == row.code, output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in output
    text = error_line(output) if row.code == 1 else " ".join(output.replace("│", " ").split())
    for word in row.words:
        assert word.lower() in text.lower(), f"{word!r} not in {text!r}"
    assert snapshot(d) == before, "the failed command left or changed files"
    assert snapshot(env.root) == shared_before
    assert not temp_leftovers(d) and not temp_leftovers(env.root)
    assert not (d / "pwned").exists()
    return output


@pytest.mark.parametrize("command, row", CASES)
def test_bad_input(env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, row: Case) -> None:
    monkeypatch.delenv("TALKFACE_DEBUG", raising=False)
    run_case(env, tmp_path, row)


def test_the_table_is_big_enough() -> None:
    per_command: dict[str, int] = {}
    for param in CASES:
        per_command[param.values[0]] = per_command.get(param.values[0], 0) + 1
    assert sum(per_command.values()) >= 40
    assert set(per_command) == {"animate", "prepare", "train", "evaluate", "render", "import-faceformer", "stream"}
    assert per_command["stream"] >= per_command["animate"] - len(NOT_FOR_STREAM)


# --------------------------------------------------------------------------------------------- unusual, valid audio


@pytest.mark.parametrize("kind", ["8-bit", "32-bit-float", "6-channel"])
def test_unusual_but_valid_audio_animates(env: Env, tmp_path: Path, kind: str) -> None:
    from talkface.io.animation import load_animation

    x = speech(1.0, 22050, channels=6 if kind == "6-channel" else 1)
    subtype = {"8-bit": "PCM_U8", "32-bit-float": "FLOAT", "6-channel": "PCM_16"}[kind]
    wav = write_wav(tmp_path / f"{kind}.wav", x, subtype, rate=22050)
    result = runner.invoke(app, animate_args(env, wav, tmp_path))
    assert result.exit_code == 0, result.output
    anim = load_animation(tmp_path / "out.npz")
    assert abs(anim.num_frames - 30) <= 1 and np.isfinite(anim.vertices).all()


@pytest.mark.parametrize("kind", ["8-bit", "32-bit-float", "6-channel"])
def test_unusual_but_valid_audio_prepares(env: Env, tmp_path: Path, kind: str) -> None:
    from talkface.data import load_prepared
    from talkface.io.audio import load_audio

    raw = copy_folder_raw(env, tmp_path)
    x = speech(1.0, 22050, channels=6 if kind == "6-channel" else 1)
    subtype = {"8-bit": "PCM_U8", "32-bit-float": "FLOAT", "6-channel": "PCM_16"}[kind]
    write_wav(raw / "spk_01.wav", x, subtype, rate=22050)
    result = runner.invoke(app, prepare_args(raw, tmp_path))
    assert result.exit_code == 0, result.output
    dataset = load_prepared(tmp_path / "out")
    clip = dataset.load_clip(dataset.clips[0])
    np.testing.assert_allclose(clip.audio, load_audio(raw / "spk_01.wav"), atol=1e-6)


# --------------------------------------------------------------------------------------------- real processes


def _talkface(*args: str, debug: bool = False) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "TALKFACE_DEBUG"}
    environment |= {"OMP_NUM_THREADS": "1", "COLUMNS": "200"} | ({"TALKFACE_DEBUG": "1"} if debug else {})
    return subprocess.run([sys.executable, "-m", "talkface", *args], capture_output=True, text=True,
                          env=environment, timeout=120)


def test_subprocess_prepare_bad_wav_has_no_traceback(env: Env, tmp_path: Path) -> None:
    raw = copy_folder_raw(env, tmp_path)
    (raw / "spk_02.wav").write_text("not audio\n")
    proc = _talkface(*prepare_args(raw, tmp_path))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "spk_02.wav" in error_line(proc.stderr) and "not a readable audio file" in proc.stderr
    # the clip before the bad one is kept (a resumable prepare, not loadable: no manifest yet)
    assert "rerun the same command to resume" in error_line(proc.stderr)
    assert sorted(p.name for p in (tmp_path / "out" / "clips").iterdir()) == ["spk_01.npz"]
    assert not (tmp_path / "out" / "manifest.jsonl").exists() and not temp_leftovers(tmp_path)
    debug = _talkface(*prepare_args(raw, tmp_path), debug=True)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "DatasetError" in debug.stderr


def test_subprocess_render_and_usage_errors(env: Env, tmp_path: Path) -> None:
    np.save(tmp_path / "nan.npy", np.full((2, 30), np.nan, np.float32))
    proc = _talkface("render", str(tmp_path / "nan.npy"), "--out", str(tmp_path / "o.mp4"), "--fps", "30")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "nan.npy" in error_line(proc.stderr)
    usage = _talkface("animate", str(tmp_path / "missing.wav"), "--checkpoint", str(env.run), "--style", "x",
                      "--out", str(tmp_path / "o.npz"))
    assert usage.returncode == 2 and "Traceback" not in usage.stderr and "missing.wav" in usage.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.npy"]


def test_debug_lets_the_exception_through(env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from talkface.errors import CheckpointError

    monkeypatch.setenv("TALKFACE_DEBUG", "1")
    (tmp_path / "random.pth").write_bytes(b"x" * 100)
    result = runner.invoke(app, _checkpoint_args(env, tmp_path, tmp_path / "random.pth"))
    assert isinstance(result.exception, CheckpointError)  # the CLI re-raised it: Python prints the traceback


# --------------------------------------------------------------------------------------------- Ctrl-C in prepare


def test_ctrl_c_during_prepare_keeps_clips_and_a_rerun_completes(env: Env, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import talkface.cli.prepare as cli
    from talkface.data import load_prepared

    raw = copy_folder_raw(env, tmp_path)
    for n in ("03", "04"):
        write_wav(raw / f"spk_{n}.wav", speech(1.0))
        np.save(raw / f"spk_{n}.npy", motion(30, int(n)))
    reference = tmp_path / "reference"
    assert runner.invoke(app, ["prepare", "folder", str(raw), str(reference), "--fps", "30"]).exit_code == 0

    real = cli._progress_callback

    def stop_after_two(update: Any, state: dict) -> Any:
        inner = real(update, state)

        def on_progress(done: int, total: int, name: str) -> None:
            inner(done, total, name)
            if done == 2:
                raise KeyboardInterrupt

        return on_progress

    out = tmp_path / "out"
    args = ["prepare", "folder", str(raw), str(out), "--fps", "30"]
    monkeypatch.setattr(cli, "_progress_callback", stop_after_two)
    stopped = runner.invoke(app, args)
    assert stopped.exit_code == 130, stopped.output
    assert "Traceback" not in stopped.output
    assert "2 of 4 clips" in stopped.output and f"talkface prepare folder {raw} {out} --fps 30" in stopped.output
    finished = sorted(p.name for p in (out / "clips").iterdir())
    assert finished == ["spk_01.npz", "spk_02.npz"] and not temp_leftovers(out)
    assert not (out / "manifest.jsonl").exists()  # not loadable as a finished dataset
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "clips").iterdir()}

    monkeypatch.setattr(cli, "_progress_callback", real)
    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    assert "2 clips written, 2 reused" in resumed.output
    assert {n: (out / "clips" / n).stat().st_mtime_ns for n in stamps} == stamps  # finished clips not redone

    a, b = load_prepared(out), load_prepared(reference)
    assert (out / "manifest.jsonl").read_text() == (reference / "manifest.jsonl").read_text()
    assert json.loads((out / "dataset.json").read_text()) == json.loads((reference / "dataset.json").read_text())
    assert a.templates.keys() == b.templates.keys()
    for name in a.templates:
        np.testing.assert_array_equal(a.templates[name], b.templates[name])
    for ca, cb in zip(a.clips, b.clips, strict=True):
        xa, xb = a.load_clip(ca), b.load_clip(cb)
        np.testing.assert_array_equal(xa.audio, xb.audio)
        np.testing.assert_array_equal(xa.vertices, xb.vertices)


# --------------------------------------------------------------------------------------------- SIGTERM (issue 15)


def test_sigterm_during_train_saves_the_state_and_exits_143(env: Env, tmp_path: Path) -> None:
    """A job scheduler's SIGTERM is Ctrl-C's twin: state saved, resume command printed, exit 128 + 15."""
    import signal
    import time

    from talkface.train.state import read_position

    run = tmp_path / "run"
    environment = {k: v for k, v in os.environ.items() if k != "TALKFACE_DEBUG"} | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "talkface", *train_args(env.data, tmp_path)[:-6],
                             "--encoder", "tiny", "--epochs", "500", "--device", "cpu"],
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (run / "state.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr and "--resume" in stderr and "interrupted" in stderr
    assert read_position(run) is not None and (run / "last.safetensors").is_file() and not temp_leftovers(run)


def test_sigterm_is_held_like_ctrl_c_during_an_optimizer_step() -> None:
    import signal

    from talkface.cli.common import sigterm_as_interrupt
    from talkface.runtime import deferred_interrupt

    done = []
    with sigterm_as_interrupt(), pytest.raises(KeyboardInterrupt):
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # else the kill below ends pytest
        with deferred_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of the step
            done.append("step")  # the step still finishes...
    assert done == ["step"]  # ...and the interrupt comes after it
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# ------------------------------------------------------------------------------------- render --compare (issue 15)


def test_a_prepared_clip_as_ground_truth_borrows_faces(env: Env, tmp_path: Path) -> None:
    """`render PRED --compare DATA/clips/X.npz`: a prepared clip stores no faces; they come from the
    prediction, else from the dataset the clip belongs to."""
    from talkface.data import load_prepared
    from talkface.workflows import load_animation_for_render, load_ground_truth

    dataset = load_prepared(env.data)
    info = dataset.clips[0]
    with_faces = load_animation_for_render(env.anim_npz, template=None, fps=None)
    gt = load_ground_truth(info.path, with_faces, template=None)
    np.testing.assert_array_equal(gt.faces, with_faces.faces)
    np.testing.assert_array_equal(gt.vertices, dataset.load_clip(info).vertices)
    np.save(tmp_path / "pred.npy", with_faces.vertices.reshape(with_faces.num_frames, -1))
    bare = load_animation_for_render(tmp_path / "pred.npy", template=None, fps=dataset.fps, need_faces=False)
    assert bare.faces is None
    np.testing.assert_array_equal(load_ground_truth(info.path, bare, template=None).faces, dataset.faces)


# --------------------------------------------------------------------------------------------- stream, real processes
# (helper "live", issue 29 class 4): refusals while stdin is still open, signals and a reader that leaves


def _stream_proc(env: Env, *args: str, stdout: Any = subprocess.PIPE) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if k != "TALKFACE_DEBUG"} | {"OMP_NUM_THREADS": "1",
                                                                                   "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "talkface", "stream", "-", "--checkpoint", str(env.run), *args],
                            stdin=subprocess.PIPE, stdout=stdout, stderr=subprocess.PIPE, env=environment,
                            preexec_fn=_ctrl_c_as_in_a_terminal)


def _ctrl_c_as_in_a_terminal() -> None:
    """Children of a suite started in the background (``nohup make test &``) inherit SIGINT ignored, as the
    shell sets it for background jobs, and Python then keeps ignoring Ctrl-C: give the child its default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _pcm(seconds: float) -> bytes:
    return (speech(seconds) * 32767).astype("<i2").tobytes()


@pytest.mark.parametrize("extra, words", [
    (["--style", "nobody", "--frames", "-"], ["unknown style 'nobody'"]),
    (["--frames", "{d}/notes.txt/frames.bin"], ["--frames", "is a file, not a folder"]),
    (["--out", "{d}/o.npz", "--subject", "nobody"], ["no template for subject 'nobody'"]),
])
def test_stream_refuses_while_stdin_is_still_open(env: Env, tmp_path: Path, extra: list[str],
                                                  words: list[str]) -> None:
    """A microphone never closes stdin: a refusal that does not depend on the audio must come without it."""
    (tmp_path / "notes.txt").write_text("x")
    extra = [a.replace("{d}", str(tmp_path)) for a in extra]
    if "--style" not in extra:
        extra = ["--style", env.speaker, *extra]
    proc = _stream_proc(env, *extra)
    try:
        proc.stdin.write(_pcm(0.2))  # some audio, and the pipe stays open
        proc.stdin.flush()
        proc.wait(timeout=60)  # exits although stdin never closes
        stderr = proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.stdin.close()
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    for word in words:
        assert word in error_line(stderr), stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def _stream_until_frames(env: Env, tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, list, Any]:
    import threading
    import time

    from talkface.io.frames import read_frames

    proc = _stream_proc(env, "--style", env.speaker, "--frames", "-", "--out", str(tmp_path / "o.npy"),
                        "--lookahead-ms", "100", "--hop-ms", "50", *extra)
    reader: list = []
    thread = threading.Thread(target=lambda: reader.extend(read_frames(proc.stdout, env.num_vertices)), daemon=True)
    thread.start()
    proc.stdin.write(_pcm(3.0))
    proc.stdin.flush()  # and stdin stays open: a live source
    deadline = time.monotonic() + 240
    while len(reader) < 10 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert len(reader) >= 10, proc.stderr.read().decode() if proc.poll() is not None else "no frames"
    return proc, reader, thread


@pytest.mark.parametrize("signum, code", [(15, 143), (2, 130)])
def test_stream_signal_mid_stream_saves_the_frames_so_far(env: Env, tmp_path: Path, signum: int,
                                                          code: int) -> None:
    proc, reader, thread = _stream_until_frames(env, tmp_path)
    try:
        proc.send_signal(signum)
        proc.wait(timeout=120)
        stderr = proc.stderr.read().decode()
    finally:
        proc.kill()
    thread.join(timeout=60)  # the reader drains the last records until stdout closes
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr and "o.npy" in stderr
    saved = np.load(tmp_path / "o.npy")
    assert saved.shape[0] == len(reader) >= 10  # every frame streamed, nothing more
    np.testing.assert_array_equal(saved.reshape(len(reader), -1, 3), np.stack([v for _, v in reader]))
    assert not temp_leftovers(tmp_path)


def test_stream_reader_closing_its_pipe(env: Env, tmp_path: Path) -> None:
    """`talkface stream - --frames - | head -c N`: a clear line, no traceback, --out keeps what was made."""
    from talkface.io.frames import record_size

    proc = _stream_proc(env, "--style", env.speaker, "--frames", "-", "--out", str(tmp_path / "o.npy"),
                        "--lookahead-ms", "100", "--hop-ms", "50")
    try:
        proc.stdin.write(_pcm(2.0))
        proc.stdin.flush()
        first = proc.stdout.read(3 * record_size(env.num_vertices))  # three frames, then the reader leaves
        proc.stdout.close()
        proc.stdin.write(_pcm(2.0))
        proc.stdin.flush()
        proc.wait(timeout=120)
        stderr = proc.stderr.read().decode()
    finally:
        proc.kill()
    assert len(first) == 3 * record_size(env.num_vertices)
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    assert "closed the pipe" in error_line(stderr)
    assert np.load(tmp_path / "o.npy").shape[0] >= 3
