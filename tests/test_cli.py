"""CLI: each command parses, validates and delegates (library functions patched), and maps errors
to exit codes: TalkfaceError → 1 with a one-line message, usage errors → 2; every error names the flag or
file at fault."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from talkface import __version__
from talkface.cli import app
from talkface.errors import CheckpointError, DatasetError

runner = CliRunner()


def _ok(result, code=0):
    assert result.exit_code == code, result.output
    return result


def _message(result, code: int) -> str:
    """The output of a command that exited with ``code``, without Rich's error box and with whitespace
    collapsed (the box wraps long lines, paths anywhere: check a path's name and the words apart)."""
    _ok(result, code)
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())


def test_version_and_help():
    assert __version__ in _ok(runner.invoke(app, ["--version"])).output
    out = _ok(runner.invoke(app, ["--help"])).output
    for cmd in ("prepare", "train", "animate", "render", "evaluate", "demo", "info"):
        assert cmd in out


def _report(tmp_path):
    return SimpleNamespace(out_dir=tmp_path, clips_per_split={"train": 3, "val": 1}, minutes=0.2,
                           skipped=[("x", "gap")], written=4, reused=0)


def test_prepare_vocaset_delegates(tmp_path, monkeypatch):
    seen = {}

    def fake(raw, out, **kw):
        seen.update(raw=raw, out=out, **kw)
        return _report(out)

    monkeypatch.setattr("talkface.data.prepare_vocaset", fake)
    result = _ok(runner.invoke(app, ["prepare", "vocaset", str(tmp_path), str(tmp_path / "o"), "--fps", "60"]))
    assert seen["raw"] == tmp_path and seen["fps"] == 60 and seen["overwrite"] is False
    assert "skipped" in result.output


def test_prepare_vocaset_errors(tmp_path, monkeypatch):
    message = _message(runner.invoke(app, ["prepare", "vocaset", str(tmp_path / "missing"), str(tmp_path / "o")]), 2)
    assert "Invalid value for 'raw_dir'" in message and "missing" in message and "does not exist" in message
    message = _message(runner.invoke(app, ["prepare", "vocaset", str(tmp_path), str(tmp_path / "o"), "--fps", "25"]),
                       2)
    assert "--fps must be 30 or 60, got 25" in message

    def boom(*a, **k):
        raise DatasetError(f"{tmp_path}/data_verts.npy: missing; expected the four VOCASET files")

    monkeypatch.setattr("talkface.data.prepare_vocaset", boom)
    result = _ok(runner.invoke(app, ["prepare", "vocaset", str(tmp_path), str(tmp_path / "o")]), 1)
    assert "data_verts.npy: missing" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("sub, fn", [("faceformer", "prepare_faceformer"), ("biwi", "prepare_biwi")])
def test_prepare_other_sources_delegate(tmp_path, monkeypatch, sub, fn):
    monkeypatch.setattr(f"talkface.data.{fn}", lambda raw, out, **kw: _report(out))
    _ok(runner.invoke(app, ["prepare", sub, str(tmp_path), str(tmp_path / "o")]))


def test_prepare_folder_needs_fps(tmp_path, monkeypatch):
    monkeypatch.setattr("talkface.data.prepare_folder", lambda raw, out, **kw: _report(out))
    assert "Missing option '--fps'" in _message(runner.invoke(app, ["prepare", "folder", str(tmp_path),
                                                                    str(tmp_path / "o")]), 2)
    message = _message(runner.invoke(app, ["prepare", "folder", str(tmp_path), str(tmp_path / "o"), "--fps", "0"]), 2)
    assert "--fps must be > 0, got 0" in message
    _ok(runner.invoke(app, ["prepare", "folder", str(tmp_path), str(tmp_path / "o"), "--fps", "30"]))


def test_prepare_synthetic_delegates(tmp_path, monkeypatch):
    seen = {}

    def fake(out, **kw):
        seen.update(kw)
        return SimpleNamespace(out_dir=out, clips=6, speakers=["a", "b"], seconds=12.0)

    monkeypatch.setattr("talkface.synthetic.write_synthetic_vocaset", fake)
    _ok(runner.invoke(app, ["prepare", "synthetic", str(tmp_path / "raw"), "--speakers", "2", "--sentences", "3"]))
    assert seen["num_speakers"] == 2 and seen["num_sentences"] == 3


def test_train_delegates_and_validates(tmp_path, monkeypatch):
    seen = {}

    def fake(data, out, config, **kw):
        seen.update(data=data, out=out, config=config, **kw)
        return SimpleNamespace(history=[{"epoch": 1, "train_loss": 2.0, "val_loss": None, "seconds": 0.1}],
                               run_dir=out, best_path=out / "best.safetensors")

    monkeypatch.setattr("talkface.train.train", fake)
    _ok(runner.invoke(app, ["train", str(tmp_path), "--out", str(tmp_path / "run"), "--loss", "mse", "--gamma", "0.01",
                            "--epochs", "3", "--batch-size", "2", "--encoder", "tiny"]))
    cfg = seen["config"]
    assert (cfg.loss, cfg.gamma, cfg.epochs, cfg.batch_size) == ("mse", 0.01, 3, 2)
    assert seen["encoder_config"] is not None  # 'tiny' builds a random-init encoder, no hub
    result = _ok(runner.invoke(app, ["train", str(tmp_path), "--out", str(tmp_path / "r2"), "--gamma", "-1"]), 1)
    assert "gamma must be in (0, 10]" in result.output


def test_animate_unknown_style_and_bad_checkpoint(tmp_path):
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"RIFF")
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"not a checkpoint")
    result = _ok(runner.invoke(app, ["animate", str(wav), "--checkpoint", str(ckpt), "--style", "A",
                                     "--out", str(tmp_path / "o.npz")]), 1)
    assert "model.safetensors" in result.output and "Traceback" not in result.output
    message = _message(runner.invoke(app, ["animate", str(tmp_path / "none.wav"), "--checkpoint", str(ckpt),
                                           "--style", "A", "--out", str(tmp_path / "o.npz")]), 2)
    assert "Invalid value for 'audio'" in message and "none.wav" in message and "does not exist" in message


def test_animate_reports_failed_inputs(tmp_path, monkeypatch):
    from talkface.workflows import AnimateResult

    wavs = [tmp_path / "a.wav", tmp_path / "b.wav"]
    for w in wavs:
        w.write_bytes(b"x")
    monkeypatch.setattr("talkface.workflows.animate_files", lambda inputs, **kw: [
        AnimateResult(inputs[0], [Path("a.npz")]), AnimateResult(inputs[1], error="b.wav: not a readable audio file")])
    result = _ok(runner.invoke(app, ["animate", *map(str, wavs), "--checkpoint", str(tmp_path), "--style", "A",
                                     "--out", str(tmp_path / "out")]), 1)
    assert "a.npz" in result.output and "not a readable audio file" in result.output


def test_render_validates(tmp_path):
    anim = tmp_path / "a.npy"
    anim.write_bytes(b"x")
    message = _message(runner.invoke(app, ["render", str(anim), "--out", str(tmp_path / "o.mp4"), "--fps", "0"]), 2)
    assert "--fps must be > 0, got 0" in message
    message = _message(runner.invoke(app, ["render", str(anim), "--out", str(tmp_path / "o.mp4"), "--error-map"]), 2)
    assert "--error-map needs --compare GT" in message
    result = _ok(runner.invoke(app, ["render", str(anim), "--out", str(tmp_path / "o.mp4"), "--size", "7"]), 1)
    assert "size" in result.output
    result = _ok(runner.invoke(app, ["render", str(anim), "--out", str(tmp_path / "o.mp4"), "--shading", "toon"]), 1)
    assert "shading" in result.output and "pbr" in result.output
    assert not (tmp_path / "o.mp4").exists()


def test_evaluate_needs_exactly_one_source(tmp_path):
    for extra in ([], ["--pred", str(tmp_path), "--checkpoint", str(tmp_path)]):
        message = _message(runner.invoke(app, ["evaluate", "--data", str(tmp_path), *extra]), 2)
        assert "Invalid value for --checkpoint/--pred: give exactly one of --checkpoint or --pred" in message


def test_info_and_demo_delegate(tmp_path, monkeypatch):
    monkeypatch.setattr("talkface.io.checkpoint_meta.read_checkpoint_meta", lambda p: {"format": "talkface", "fps": 30})
    assert "talkface" in _ok(runner.invoke(app, ["info", str(tmp_path)])).output

    def broken(p):
        raise CheckpointError(f"{p}: not a talkface checkpoint")

    monkeypatch.setattr("talkface.io.checkpoint_meta.read_checkpoint_meta", broken)
    assert "not a talkface checkpoint" in _ok(runner.invoke(app, ["info", str(tmp_path)]), 1).output
    result_obj = SimpleNamespace(summary=lambda: {"clips": "3/1/1"}, video=tmp_path / "demo.mp4",
                                 animation=tmp_path / "clip.npz")
    monkeypatch.setattr("talkface.demo.run_demo", lambda out, **kw: result_obj)
    output = _ok(runner.invoke(app, ["demo", "--out", str(tmp_path / "d")])).output
    assert "demo.mp4" in output and f"talkface view {tmp_path / 'clip.npz'}" in output


def _tiny_run(folder, extra=None):
    import torch

    from talkface.config import ModelConfig
    from talkface.model import TalkFaceModel, tiny_encoder_config
    from talkface.model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    config = ModelConfig(num_vertices=10, feature_dim=16, period=3, num_heads=4, num_layers=1, speakers=("a", "b"))
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(folder / "best.safetensors", TalkFaceModel(config, tiny_encoder_config()), extra=extra)
    return folder


def test_info_shows_the_best_epochs_metrics(tmp_path):
    """Every number of the record of the epoch best.safetensors was saved at, whatever its keys."""
    run = _tiny_run(tmp_path / "run", extra={"epoch": 2})
    records = [{"epoch": e, "train_loss": 1.0 / (e + 1), "val_lve": 0.01 * (e + 1), "lip_corr": 0.5 + e / 10,
                "opening_range": 0.003 * e, "note": "text", "seconds": 4} for e in range(4)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"epoch": 4, "tra')
    output = " ".join(_ok(runner.invoke(app, ["info", str(run)])).output.replace("│", " ").split())
    for key, value in (("val_lve", "0.03"), ("lip_corr", "0.7"), ("opening_range", "0.006"), ("train_loss",
                                                                                                "0.333333")):
        assert f"metrics: {key} {value}" in output, output
    assert "metrics: note" not in output and "0.04" not in output  # text, and another epoch's numbers
    (run / "metrics.jsonl").unlink()  # a checkpoint copied out of its run: no metrics, no error
    assert "metrics:" not in _ok(runner.invoke(app, ["info", str(run / "best.safetensors")])).output


def test_info_imports_no_torch(tmp_path):
    """`talkface info` reads JSON; importing torch would cost seconds (issue 28)."""
    run = _tiny_run(tmp_path / "run", extra={"epoch": 0})
    code = ("import sys\nfrom talkface.cli import main\nsys.argv = ['talkface', 'info', sys.argv[1]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "heavy = [m for m in ('torch', 'transformers', 'safetensors.torch') if m in sys.modules]\n"
            "assert not heavy, heavy\nprint('light')")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and "light" in proc.stdout, proc.stdout + proc.stderr
    assert "num_parameters" in proc.stdout


def test_demo_progress_times_each_stage_on_its_own(tmp_path, monkeypatch):
    # a 1.2 s "training" and an instant "render": the render's line must not carry the training's time
    def fake_demo(out, *, epochs=None, on_progress):
        on_progress("train", 0, 2)
        time.sleep(1.2)
        on_progress("train (epoch 1/2, loss 0.5)", 1, 2)
        on_progress("train (epoch 2/2, loss 0.4)", 2, 2)
        on_progress("render", 0, 3)
        on_progress("render", 3, 3)
        return SimpleNamespace(summary=lambda: {}, video=out / "demo.mp4", animation=out / "clip.npz")

    monkeypatch.setattr("talkface.demo.run_demo", fake_demo)
    lines = _ok(runner.invoke(app, ["demo", "--out", str(tmp_path / "d")])).output.splitlines()
    train = [line for line in lines if line.startswith("train")]
    render = [line for line in lines if line.startswith("render")]
    assert len(train) == 1 and len(render) == 1, lines

    def elapsed_s(line: str) -> int:  # the first H:MM:SS on the line is the elapsed time
        h, m, s = re.search(r"(\d+):(\d\d):(\d\d)", line).groups()
        return 3600 * int(h) + 60 * int(m) + int(s)

    assert "2/2" in train[0] and elapsed_s(train[0]) >= 1, lines
    assert "3/3" in render[0] and elapsed_s(render[0]) == 0, lines


def test_import_faceformer_delegates(tmp_path, monkeypatch):
    pth = tmp_path / "vocaset.pth"
    pth.write_bytes(b"x")
    seen = {}

    def fake(p, **kw):
        seen.update(kw)
        return tmp_path / "out" / "best.safetensors"

    monkeypatch.setattr("talkface.model.faceformer_import.import_faceformer", fake)
    _ok(runner.invoke(app, ["import-faceformer", str(pth), "--speakers", "A B,C", "--out", str(tmp_path / "out")]))
    assert seen["speakers"] == ["A", "B", "C"] and seen["preset"] == "vocaset"
    monkeypatch.undo()  # the real importer refuses a file that is not a FaceFormer checkpoint
    args = ["import-faceformer", str(pth), "--speakers", "A", "--out", str(tmp_path / "o2")]
    result = _ok(runner.invoke(app, args), 1)
    assert "vocaset.pth" in result.output and "Traceback" not in result.output


# ------------------------------------------------------------------------------ train: config file, flags, progress
def _fake_train(seen, events=()):
    def fake(data, out, config, *, on_progress=None, **kw):
        seen.update(data=data, out=out, config=config, **kw)
        for event in events:
            on_progress(event)
        return SimpleNamespace(history=[{"epoch": 1, "train_loss": 2.0, "val_loss": None, "seconds": 0.1}],
                               run_dir=out, best_path=None)

    return fake


def test_train_config_file_then_flags(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr("talkface.train.train", _fake_train(seen))
    cfg = tmp_path / "train.toml"
    cfg.write_text('loss = "mse"\nepochs = 9\nlr = 0.001\nteacher_forcing = true\npreset = "biwi"\n'
                   '[model]\nfeature_dim = 32\n')
    base = ["train", str(tmp_path), "--out", str(tmp_path / "run"), "--config", str(cfg)]
    _ok(runner.invoke(app, [*base, "--epochs", "2", "--no-teacher-forcing", "--feature-dim", "8", "--resume"]))
    c = seen["config"]
    assert (c.loss, c.lr, c.epochs, c.teacher_forcing, c.gamma) == ("mse", 0.001, 2, False, 1e-3)
    assert seen["preset"] == "biwi" and seen["model_overrides"] == {"feature_dim": 8} and seen["resume"] is True
    assert seen["device"] == "auto" and seen["encoder_config"] is None and seen["overwrite"] is False

    cfg.write_text("epochs = 9\nbatchsize = 2\n")
    result = _ok(runner.invoke(app, base), 1)
    assert "batchsize" in result.output and "batch_size" in result.output and "train.toml" in result.output
    message = _message(runner.invoke(app, [*base, "--resume", "--overwrite"]), 2)
    assert "--resume/--overwrite: --resume continues a run, --overwrite replaces it; give one" in message
    message = _message(runner.invoke(app, [*base[:-2], "--config", str(tmp_path / "missing.toml")]), 2)
    assert "Invalid value for '--config'" in message and "missing.toml" in message and "does not exist" in message


def test_train_progress_reports_resume_validation_and_tensorboard(tmp_path, monkeypatch):
    events = [
        {"event": "start", "epochs": 4, "steps_per_epoch": 2, "device": "cpu", "start_epoch": 3, "start_step": 1,
         "num_train_clips": 4, "tensorboard": False},
        {"event": "step", "epoch": 3, "step": 2, "loss": 0.5, "clips": 2},
        {"event": "validate", "epoch": 3},
        {"event": "epoch", "epoch": 3, "train_loss": 0.5, "val_loss": 0.25, "val_lve": 2e-5, "clips_per_s": 3.0,
         "val_lip_corr": 0.1234, "val_opening_range": 0.05},
        {"event": "warning", "kind": "static", "epoch": 3, "message": "the predicted lips barely move"},
        {"event": "step", "epoch": 4, "step": 1, "loss": 0.4, "clips": 2},
        {"event": "validate", "epoch": 4},
    ]
    monkeypatch.setattr("talkface.train.train", _fake_train({}, events))
    out = _ok(runner.invoke(app, ["train", str(tmp_path), "--out", str(tmp_path / "run")])).output
    assert "resuming at epoch 3, step 2" in out
    assert out.count("TensorBoard not installed: pip install tensorboard") == 1
    assert "validating…" in out and "epoch 4/4" in out and "clips/s" in out
    assert "val loss 0.25" in out and "val LVE 2×1e-5" in out
    assert "lip corr 0.123" in out and "opening range 0.05" in out
    assert "warning (epoch 3): the predicted lips barely move" in out


def test_train_saves_the_resolved_config(tiny_data, tmp_path):
    import json

    cfg = tmp_path / "train.toml"
    cfg.write_text('encoder = "tiny"\nloss = "softdtw+mse"\nmse_weight = 2\nband = 2\nepochs = 5\n'
                   'batch_size = 2\nlr = 0.0003\ndevice = "cpu"\n[model]\nfeature_dim = 16\nnum_heads = 2\n')
    run = tmp_path / "run"
    result = _ok(runner.invoke(app, ["train", str(tiny_data), "--out", str(run), "--config", str(cfg),
                                     "--epochs", "1", "--seed", "3", "--gamma", "0.01"]))
    saved = json.loads((run / "config.json").read_text())
    train, model = saved["train"], saved["model"]
    assert (train["loss"], train["mse_weight"], train["band"], train["batch_size"], train["lr"]) == (
        "softdtw+mse", 2.0, 2, 2, 0.0003)  # from the file
    assert (train["epochs"], train["seed"], train["gamma"]) == (1, 3, 0.01)  # flags over the file
    assert train["encoder"] == "tiny" and train["divergence"] is False  # file, default
    assert (model["feature_dim"], model["num_heads"]) == (16, 2) and saved["device"] == "cpu"
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert "run folder" in result.output

    # --resume takes the run's settings from config.json: only the raised --epochs is given
    result = _ok(runner.invoke(app, ["train", str(tiny_data), "--out", str(run), "--resume", "--epochs", "2"]))
    assert "resuming at epoch 2" in result.output
    saved = json.loads((run / "config.json").read_text())
    assert saved["train"] == {**train, "epochs": 2} and saved["model"] == model
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


# ------------------------------------------------------------------------------ --threads (issue 20)
def _spy_threads(monkeypatch) -> list:
    seen: list = []
    monkeypatch.setattr("talkface.cli.common.use_threads", lambda requested, **kw: seen.append(requested))
    return seen


def test_train_threads_from_flag_or_config_file(tmp_path, monkeypatch):
    seen = _spy_threads(monkeypatch)
    monkeypatch.setattr("talkface.train.train", _fake_train({}))
    base = ["train", str(tmp_path), "--out", str(tmp_path / "run")]
    _ok(runner.invoke(app, [*base, "--encoder", "tiny", "--threads", "3"]))
    cfg = tmp_path / "train.toml"
    cfg.write_text("threads = 2\n")
    _ok(runner.invoke(app, [*base, "--config", str(cfg)]))
    _ok(runner.invoke(app, [*base, "--config", str(cfg), "--threads", "1"]))  # the flag wins
    _ok(runner.invoke(app, base))
    assert seen == [3, 2, 1, None]
    assert "'--threads': Input should be greater than or equal to 1" in _message(
        runner.invoke(app, [*base, "--threads", "0"]), 2)
    cfg.write_text("threads = 0\n")
    message = _message(runner.invoke(app, [*base, "--config", str(cfg)]), 1)
    assert "train.toml: threads must be a positive integer, got 0" in message and "train.toml" in message
    cfg.write_text('threads = "2"\n')
    assert "threads must be an integer" in _message(runner.invoke(app, [*base, "--config", str(cfg)]), 1)


def test_animate_and_evaluate_threads(tmp_path, monkeypatch):
    seen = _spy_threads(monkeypatch)
    monkeypatch.setattr("talkface.workflows.animate_files", lambda inputs, **kw: [])
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"x")
    _ok(runner.invoke(app, ["animate", str(wav), "--checkpoint", str(tmp_path), "--style", "A", "--out",
                            str(tmp_path / "o"), "--threads", "2"]))
    monkeypatch.setattr("talkface.evaluate.evaluation.evaluate", lambda *a, **k: (_ for _ in ()).throw(
        DatasetError("stop here")))
    _message(runner.invoke(app, ["evaluate", "--data", str(tmp_path), "--checkpoint", str(tmp_path)]), 1)
    _message(runner.invoke(app, ["evaluate", "--data", str(tmp_path), "--pred", str(tmp_path), "--threads", "1"]), 1)
    assert seen == [2, None, 1]


APPLY_ORDER = """
import sys
from types import ModuleType, SimpleNamespace

import talkface.runtime
from typer.testing import CliRunner

from talkface.cli import app

seen = []
real = talkface.runtime.apply_thread_policy
talkface.runtime.apply_thread_policy = lambda policy: seen.append("torch" in sys.modules) or real(policy)
tmp = sys.argv[1]
stub = ModuleType("talkface.train")  # the real package loads torch: it must not be imported before the command
stub.train = lambda *a, **k: SimpleNamespace(history=[], run_dir=tmp, best_path=None)
sys.modules["talkface.train"] = stub
result = CliRunner().invoke(app, ["train", tmp, "--out", tmp + "/run", "--encoder", "tiny", "--threads", "2"])
print(result.exit_code, seen)
"""


def test_train_applies_the_policy_before_torch_loads(tmp_path):
    """OMP_WAIT_POLICY only takes effect when set before torch loads the OpenMP runtime."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", APPLY_ORDER, str(tmp_path)], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split()[-2:] == ["0", "[False]"], out.stdout + out.stderr


# --------------------------------------------------------------------------------------------- issue 29, class 3


def test_the_cli_names_the_flag_a_file_came_through(tmp_path):
    from talkface.cli.common import command_flags, name_the_flag
    from talkface.cli.evaluate import evaluate

    flags = command_flags(evaluate)
    assert (flags["data"], flags["csv"], flags["plot_clip"], flags["overwrite"]) == (
        "--data", "--csv", "--plot-clip", "--overwrite")
    run, run2 = tmp_path / "run", tmp_path / "run2"
    values = {"checkpoint": run, "report": run / "eval.json", "data": tmp_path, "split": "test"}
    assert name_the_flag(f"{run / 'faces.npy'}: faces index vertices 0..9", flags, values) == \
        f"--checkpoint {run / 'faces.npy'}: faces index vertices 0..9"  # a file inside the folder given
    assert name_the_flag(f"{run / 'eval.json'}: cannot write it", flags, values).startswith("--report ")  # longest
    assert name_the_flag(f"{run2}: no such file", flags, values) == f"--data {run2}: no such file"  # not --checkpoint
    already = f"--report {run / 'eval.json'} is the input --checkpoint {run}"
    assert name_the_flag(already, flags, values) == already
    assert name_the_flag("unknown style 'x'", flags, values) == "unknown style 'x'"
    from talkface.cli.animate import animate

    assert command_flags(animate)["audio"] == "AUDIO" and command_flags(animate)["fmt"] == "--format"
