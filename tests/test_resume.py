"""Exact resume (issues 7 and 10): a run killed with SIGKILL, or stopped by Ctrl-C, and resumed ends with
weights bit-identical to a run that was never stopped; resume refuses other settings and empty folders.

The oracle is the uninterrupted run of the same recipe (tiny model, dropout and SpecAugment on, so the
RNG states matter), in this process with one torch thread, as the killed job uses."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import train_job

from talkface.errors import CheckpointError, ConfigError, InterruptedRun, OutputError

JOB = Path(__file__).with_name("train_job.py")
TOTAL_STEPS = 12  # 4 train clips, batch 1, 3 epochs


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_train(data: Path, run: Path, **kwargs):
    from talkface.train import train

    config = train_job.tiny_config(**kwargs.pop("config", {}))
    with one_thread():
        return train(data, run, config, **train_job.tiny_kwargs(), **kwargs)


def assert_same_weights(a: Path, b: Path) -> None:
    import torch
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "last.safetensors")), load_file(str(b / "last.safetensors"))
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} of {len(wa)} tensors differ, e.g. {different[:3]}"


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_losses(a: Path, b: Path) -> None:
    ma, mb = metrics(a), metrics(b)
    assert [m["epoch"] for m in mb] == [m["epoch"] for m in ma]
    for key in ("train_loss", "val_loss", "val_lve"):
        assert [m[key] for m in mb] == [m[key] for m in ma], key


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return train_job.make_tiny_data(tmp_path_factory.mktemp("resume"))


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("reference") / "run"
    run_train(data, run)
    return run


def spawn(data: Path, run: Path, options: dict) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(JOB), str(data), str(run), json.dumps(options)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_when(proc: subprocess.Popen, run: Path, global_step: int, timeout: float = 300) -> None:
    """SIGKILL ``proc`` as soon as its saved state has reached ``global_step`` optimizer steps."""
    from talkface.train.state import read_position

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the job ended (rc {proc.returncode}) before step {global_step}: "
                                 f"{proc.stderr.read().decode()[-2000:]}")
        pos = read_position(run) if (run / "state.pt").exists() else None
        if pos is not None and pos.global_step >= global_step:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_then_resume_is_bit_identical(data, reference, tmp_path):
    from talkface.train.state import read_position

    run = tmp_path / "run"
    kill_when(spawn(data, run, {"state_every_steps": 1}), run, global_step=5)
    saved = read_position(run)
    assert 5 <= saved.global_step < TOTAL_STEPS, "the job must die mid-run for this test to mean anything"
    events: list[dict] = []
    result = run_train(data, run, resume=True, on_progress=events.append)
    start = events[0]
    assert start["event"] == "start" and (start["start_epoch"], start["start_step"]) == (saved.epoch, saved.step)
    assert sum(e["event"] == "step" for e in events) == TOTAL_STEPS - saved.global_step
    assert_same_weights(reference, run)
    assert_same_losses(reference, run)
    assert len(result.history) == 3


def test_ctrl_c_saves_state_and_resume_is_bit_identical(data, reference, tmp_path):
    from talkface.train.state import read_position

    run = tmp_path / "run"

    def stop(event: dict) -> None:
        if event["event"] == "step" and (event["epoch"], event["step"]) == (2, 2):
            raise KeyboardInterrupt

    with pytest.raises(InterruptedRun) as info:
        run_train(data, run, on_progress=stop)
    message = str(info.value)
    assert "epoch 2 step 2" in message
    assert f"resume with: talkface train {data} --out {run} --resume" in message
    assert str(run / "state.pt") in message
    pos = read_position(run)
    assert (pos.epoch, pos.step, pos.global_step) == (2, 2, 6)
    assert (run / "last.safetensors").is_file() and len(metrics(run)) == 1
    run_train(data, run, resume=True)
    assert_same_weights(reference, run)
    assert_same_losses(reference, run)


def test_ctrl_c_inside_an_accumulation_group_reruns_the_group(data, tmp_path):
    """grad_accum 2: Ctrl-C after the 3rd micro-batch rewinds to the optimizer step after the 2nd."""
    reference, run = tmp_path / "reference", tmp_path / "run"
    recipe = {"grad_accum": 2, "epochs": 2}
    run_train(data, reference, config=recipe)

    def stop(event: dict) -> None:
        if event["event"] == "step" and (event["epoch"], event["step"]) == (1, 3):
            raise KeyboardInterrupt

    with pytest.raises(InterruptedRun, match="epoch 1 step 2;"):
        run_train(data, run, config=recipe, on_progress=stop)
    events: list[dict] = []
    run_train(data, run, config=recipe, resume=True, on_progress=events.append)
    assert (events[0]["start_epoch"], events[0]["start_step"]) == (1, 2)
    assert_same_weights(reference, run)
    assert_same_losses(reference, run)


def test_resume_refusals(data, reference, tmp_path):
    from talkface.train import train

    config = train_job.tiny_config()
    with pytest.raises(ConfigError, match="--resume and --overwrite"):
        train(data, reference, config, resume=True, overwrite=True, **train_job.tiny_kwargs())
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a run")
    with pytest.raises(CheckpointError, match=str(empty)):
        run_train(data, empty, resume=True)
    with pytest.raises(OutputError, match="exists already"):
        run_train(data, empty)
    with pytest.raises(ConfigError, match=r"lr: 0\.001 → 0\.002") as info:
        run_train(data, reference, resume=True, config={"lr": 2e-3})
    assert "epochs:" not in str(info.value)
    with pytest.raises(ConfigError, match=r"model\.feature_dim"):
        from talkface.train import train as bare

        bare(data, reference, config, resume=True, **{**train_job.tiny_kwargs(), "model_overrides": None})
    with pytest.raises(ConfigError, match="below the 3 epochs"):
        run_train(data, reference, resume=True, config={"epochs": 2})


@pytest.mark.parametrize("version", [0, -1, None, 2])
def test_state_versions_outside_the_known_range_are_refused(tmp_path, version):
    import torch

    from talkface.train.state import STATE_FORMAT, load_state

    torch.save({"format": STATE_FORMAT, **({} if version is None else {"version": version})}, tmp_path / "state.pt")
    expected = "is newer than this talkface reads" if version == 2 else "is not supported"
    with pytest.raises(CheckpointError, match=f"training state version {version!r} {expected}"):
        load_state(tmp_path)


def test_resume_with_more_epochs_continues_the_log(data, reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    events: list[dict] = []
    result = run_train(data, run, resume=True, config={"epochs": 4}, on_progress=events.append)
    assert (events[0]["start_epoch"], events[0]["start_step"]) == (4, 0)
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert metrics(run)[:3] == metrics(reference) and len(metrics(run)) == 4
    # a finished run resumes to nothing
    again = run_train(data, run, resume=True, config={"epochs": 4})
    assert len(again.history) == 4


@pytest.mark.slow
def test_soak_sigkill_at_five_random_points(data, reference, tmp_path):
    """Issue 10: SIGKILL at 5 random points (fixed seed), resuming each time, ends bit-identical."""
    points = sorted(random.Random(10).sample(range(1, TOTAL_STEPS), 5))
    run = tmp_path / "run"
    for i, point in enumerate(points):
        kill_when(spawn(data, run, {"state_every_steps": 1, "resume": i > 0}), run, global_step=point)
    proc = spawn(data, run, {"state_every_steps": 1, "resume": True})
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-2000:]
    proc.stderr.close()
    assert_same_weights(reference, run)
    assert_same_losses(reference, run)


def test_saved_run_settings_resume_without_flags(data, reference, tmp_path):
    """What the CLI does for `talkface train DATA --out RUN --resume` with no other flags."""
    from talkface.config import load_run_values, resolve_train_options
    from talkface.errors import ConfigError
    from talkface.train import train

    config, options = resolve_train_options({}, {}, base=load_run_values(reference))
    assert config == train_job.tiny_config() and options["model_overrides"]["feature_dim"] == 16
    assert options["preset"] is None
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    kwargs = {**train_job.tiny_kwargs(), "model_overrides": options["model_overrides"]}
    with one_thread():
        result = train(data, run, config, resume=True, **kwargs)  # finished: nothing to do, no refusal
    assert len(result.history) == 3
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="config.json"):
        load_run_values(tmp_path / "bad")