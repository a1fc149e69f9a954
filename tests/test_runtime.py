"""The CPU thread policy (issue 20): the pure decision, and that applying it reaches torch and the OpenMP
runtime (checked in a fresh interpreter, where torch has not loaded yet)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from talkface.runtime import (
    ThreadPolicy,
    apply_thread_policy,
    choose_thread_policy,
    env_thread_count,
)


@pytest.mark.parametrize("cpus", [1, 2, 4, 64])
def test_default_policy(cpus):
    policy = choose_thread_policy(None, num_cpus=cpus)
    assert policy.threads == min(cpus, 2)
    # more than one thread never spins: idle workers would take CPU time from busy neighbours
    assert policy.wait_policy == ("PASSIVE" if policy.threads > 1 else None)


@pytest.mark.parametrize("cpus", [1, 2, 64])
def test_small_models_default_to_one_thread(cpus):
    policy = choose_thread_policy(None, num_cpus=cpus, small_model=True)
    assert policy.threads == 1 and policy.wait_policy is None and "small model" in policy.reason
    assert choose_thread_policy(2, num_cpus=cpus, small_model=True).threads == 2  # --threads still wins
    assert choose_thread_policy(None, num_cpus=cpus, env_threads=2, small_model=True).threads == 2


def test_small_encoders_are_the_built_in_ones():
    from talkface.model.audio_encoder import BUILTIN_ENCODERS
    from talkface.runtime import SMALL_ENCODERS

    assert SMALL_ENCODERS == {"tiny", *BUILTIN_ENCODERS}


def test_explicit_and_environment_counts_win():
    assert choose_thread_policy(3, num_cpus=2, env_threads=1).threads == 3
    env = choose_thread_policy(None, num_cpus=8, env_threads=4)
    assert env.threads == 4 and env.wait_policy == "PASSIVE" and "OMP_NUM_THREADS=4" in env.reason
    assert choose_thread_policy(1, num_cpus=8).wait_policy is None


def test_environment_counts():
    assert env_thread_count({}) is None
    assert env_thread_count({"OMP_NUM_THREADS": "4,2"}) == 4
    assert env_thread_count({"OMP_NUM_THREADS": "0"}) is None
    assert env_thread_count({"OMP_NUM_THREADS": "many"}) is None


def test_apply_after_torch_loaded_reports_the_wait_policy_as_too_late():
    import torch

    env: dict[str, str] = {}
    applied = apply_thread_policy(ThreadPolicy(1, None, "test"), environ=env)
    assert torch.get_num_threads() == 1 and env["OMP_NUM_THREADS"] == "1"
    assert applied.wait_policy_applied  # nothing to apply
    late = apply_thread_policy(ThreadPolicy(2, "PASSIVE", "test"), environ=env)
    assert not late.wait_policy_applied and "OMP_WAIT_POLICY" not in env
    assert torch.get_num_threads() == 2


CHILD = """
import json, os, sys
from talkface.runtime import ThreadPolicy, apply_thread_policy
applied = apply_thread_policy(ThreadPolicy(int(sys.argv[1]), sys.argv[2] or None, "test"))
import torch
print(json.dumps({"threads": torch.get_num_threads(), "applied": applied.wait_policy_applied,
                  "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME",
                                                         "NUMBA_NUM_THREADS")},
                  "parallel": torch.__config__.parallel_info()}))
"""


def _child(threads: int, wait: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME",
                                                              "NUMBA_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", CHILD, str(threads), wait], env={**clean, **env},
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_apply_before_torch_sets_the_runtime_knobs():
    got = _child(2, "PASSIVE")
    assert got["threads"] == 2 and got["applied"] is True
    assert got["env"] == {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0",
                          "NUMBA_NUM_THREADS": str(min(2, len(os.sched_getaffinity(0))))}
    assert "OMP_NUM_THREADS : 2" in got["parallel"]  # what the OpenMP runtime read when torch loaded
    # a wait policy the user exported is kept
    assert _child(2, "PASSIVE", OMP_WAIT_POLICY="ACTIVE")["env"]["OMP_WAIT_POLICY"] == "ACTIVE"
