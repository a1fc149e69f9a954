"""DDP under torchrun (issue 7): 2 CPU processes with gloo at global batch 2 follow the same loss curve and
end with the same weights as one process at batch 2; batch sharding keeps the global mean exact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import train_job

from talkface.errors import ConfigError
from talkface.train.distributed import DistContext, check_batch_size, shard_batch

JOB = Path(__file__).with_name("train_job.py")


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shard_weights_make_the_ddp_average_the_global_mean(world):
    rng = np.random.default_rng(world)
    for n in range(1, 8):
        losses = rng.normal(size=n)
        shards = [shard_batch(list(range(n)), r, world) for r in range(world)]
        covered = [i for items, w in shards if w for i in items]
        assert covered == list(range(n))  # contiguous slices, each clip once
        # DDP averages the ranks' gradients of (weight * mean loss of the rank's clips)
        ddp = sum(w * losses[items].mean() for items, w in shards) / world
        assert ddp == pytest.approx(losses.mean(), rel=1e-12)


def test_global_batch_must_split_over_the_ranks():
    check_batch_size(4, DistContext(world_size=2))
    with pytest.raises(ConfigError, match="divisible by the 2 processes"):
        check_batch_size(3, DistContext(world_size=2))


def test_python_m_talkface_runs():
    out = subprocess.run([sys.executable, "-m", "talkface", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "train" in out.stdout


# ~20-45 s (two interpreters importing torch): in the default suite, since issue 7 names this test.
def test_torchrun_gloo_two_processes_match_one_process(tmp_path):
    import torch
    from safetensors.torch import load_file

    from talkface.train import train

    data = train_job.make_tiny_data(tmp_path / "corpus")
    recipe = {"batch_size": 2, "epochs": 2}
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(data, single, train_job.tiny_config(**recipe), **train_job.tiny_kwargs(dropout=False))
    finally:
        torch.set_num_threads(before)
    options = json.dumps({"dropout": False, "config": recipe})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          str(JOB), str(data), str(ddp), options], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    config = json.loads((ddp / "config.json").read_text())
    assert config["world_size"] == 2
    ma, mb = ([json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (single, ddp))
    assert [m["epoch"] for m in mb] == [1, 2]
    for key in ("train_loss", "val_loss"):  # equal global batches: the same curve
        np.testing.assert_allclose([m[key] for m in mb], [m[key] for m in ma], rtol=1e-5, err_msg=key)
    wa, wb = (load_file(str(run / "last.safetensors")) for run in (single, ddp))
    assert wa.keys() == wb.keys()
    for name in wa:
        a, b = without_key_biases(name, wa[name]), without_key_biases(name, wb[name])
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5, msg=name)
        steps, lr = 4, train_job.tiny_config().lr  # 2 epochs x 2 global batches
        assert float((wb[name] - wa[name]).abs().max()) <= 2 * lr * steps, name


def without_key_biases(name: str, tensor):
    """Drop attention key biases: softmax ignores them, so their true gradient is 0 and Adam turns the
    rounding noise left in it into steps of up to lr, in either direction (checked separately: ≤ lr per step)."""
    if name.endswith("k_proj.bias"):
        return tensor[:0]
    if name.endswith("in_proj_bias"):  # [q | k | v] biases of torch's MultiheadAttention
        d = tensor.shape[0] // 3
        return tensor[[*range(d), *range(2 * d, 3 * d)]]
    return tensor


def _torchrun(data: Path, run: Path, options: dict, **popen: object) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             str(JOB), str(data), str(run), json.dumps(options)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **popen)


def _finish(proc: subprocess.Popen) -> None:
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr.decode()[-3000:]


# ~60-90 s (three two-process jobs): issue 15 asks for the gloo test to kill and resume.
def test_torchrun_sigkill_then_resume_is_bit_identical(tmp_path):
    """Dropout on: rank 1's masks come from its own generators, which only its rng-rank1.pt restores."""
    import signal

    import torch
    from safetensors.torch import load_file

    from talkface.train.state import rank_rng_file, read_position

    data = train_job.make_tiny_data(tmp_path / "corpus")
    options = {"config": {"batch_size": 2, "epochs": 2}, "state_every_steps": 1}  # 4 optimizer steps in all
    reference, run = tmp_path / "reference", tmp_path / "run"
    _finish(_torchrun(data, reference, options))
    # the job SIGKILLs torchrun and both ranks once step 3 is saved
    job = _torchrun(data, run, {**options, "kill_group_at_step": 3})
    _, stderr = job.communicate(timeout=300)
    assert job.returncode == -signal.SIGKILL, stderr.decode()[-3000:]
    saved = read_position(run)
    assert saved is not None and saved.global_step == 3, "the job must die mid-run for this test to mean anything"
    assert rank_rng_file(run, 1).is_file()
    _finish(_torchrun(data, run, {**options, "resume": True}))
    wa, wb = (load_file(str(r / "last.safetensors")) for r in (reference, run))
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} of {len(wa)} tensors differ after the resume, e.g. {different[:3]}"
