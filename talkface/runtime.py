"""Runtime choices shared by every stage (the bottom layer, next to config and errors): the device, and
the CPU thread policy for torch, its OpenMP runtime and numba.

Why a policy (issue 20; numbers in docs/benchmarks.md, "Threads"): PyTorch's CPU ops are OpenMP
parallel regions, and each ends at a barrier where the calling thread waits for every worker. A model
made of many small ops (FaceFormer's decoder, one token per step) enters thousands of regions per
step. Next to busy processes the OS deschedules a worker for a whole time slice, and every barrier
pays for it. With libgomp's default waiting (spin, then sleep) the spinning workers also take CPU
time from the neighbours and from each other: the demo recipe's epoch ran 20-90× slower than with
passive waiting, idle or not.

Knobs, and when each one takes effect:

- ``torch.set_num_threads(n)``: intra-op threads (OpenMP and MKL pools); any time.
- ``OMP_NUM_THREADS``, ``OMP_WAIT_POLICY``/``GOMP_SPINCOUNT`` (libgomp, PyTorch's pip wheels) and
  ``KMP_BLOCKTIME`` (Intel's libiomp, conda builds): read once, when the OpenMP runtime loads, i.e. at
  ``import torch``. Set later they do nothing, which ``AppliedThreads.wait_policy_applied`` reports.
- numba: the soft-DTW CPU kernels are compiled without ``parallel=True``; ``talkface.losses`` splits
  them over ``torch.get_num_threads()`` plain Python threads, so the torch setting governs them too.
  ``NUMBA_NUM_THREADS`` is still capped (before numba loads) so that numba's own pool, if any code
  starts it, does not exceed the policy.

The decision (``choose_thread_policy``) is a pure function; ``apply_thread_policy`` is the one place
that changes process state, and only the CLI calls it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from talkface.errors import ConfigError

MAX_DEFAULT_THREADS = 2  # measured on 2 CPUs only; more is the user's call (--threads)
# talkface's own small encoders (model.audio_encoder: "tiny" and the shipped BUILTIN_ENCODERS), named here
# because the policy is chosen before torch loads. Their ops are too small to split: on an idle 2-CPU
# machine 8 demo epochs took 13.7 s on 1 thread vs 19.8 s on 2 passive threads, and 22.8 s vs 31.3 s next
# to 2 busy processes (docs/benchmarks.md, "Threads").
SMALL_ENCODERS = frozenset({"tiny", "synthetic-phonetic"})


@dataclass(frozen=True)
class ThreadPolicy:
    """How many CPU threads to compute with, and how idle OpenMP workers wait.

    Attributes:
        threads: torch intra-op threads (>= 1); also the number of soft-DTW kernel threads.
        wait_policy: ``"PASSIVE"`` (workers sleep at once when idle), ``"ACTIVE"`` or None (the
            runtime's default: libgomp spins a while, then sleeps). Only meaningful when threads > 1.
        reason: why, in words (for ``--verbose``-style reporting and the tests).
    """

    threads: int
    wait_policy: str | None
    reason: str


@dataclass(frozen=True)
class AppliedThreads:
    """What ``apply_thread_policy`` did.

    Attributes:
        policy: the policy applied.
        wait_policy_applied: False when the OpenMP runtime had already started (torch imported
            before), so ``OMP_WAIT_POLICY``/``KMP_BLOCKTIME`` could not take effect.
    """

    policy: ThreadPolicy
    wait_policy_applied: bool


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, as ``taskset``/cgroups cpusets set it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def choose_thread_policy(requested: int | None, *, num_cpus: int, env_threads: int | None = None,
                         small_model: bool = False) -> ThreadPolicy:
    """The thread policy for this machine (pure).

    Precedence: ``requested`` (``--threads``/config file) > ``env_threads`` (``OMP_NUM_THREADS`` the
    user exported) > the default, ``min(num_cpus, MAX_DEFAULT_THREADS)`` threads. Whenever more than one
    thread is used, OpenMP workers wait passively: they sleep at once when idle instead of spinning on
    CPUs that busy neighbours need. That, not the thread count, is what kept training fast next to busy
    processes (docs/benchmarks.md, "Threads"). A small model (``small_model``: an encoder in
    ``SMALL_ENCODERS``) defaults to 1 thread: measured on a quiet machine, its ops are too small to split.

    Args:
        requested: thread count asked for explicitly, or None.
        num_cpus: CPUs available to the process (``available_cpus()``).
        env_threads: ``OMP_NUM_THREADS`` when the user set it, else None.
        small_model: the model is one of talkface's small encoders (default 1 thread).

    Returns:
        A ``ThreadPolicy``.
    """
    if requested is not None:
        threads, why = requested, f"--threads {requested}"
    elif env_threads is not None:
        threads, why = env_threads, f"OMP_NUM_THREADS={env_threads}"
    else:
        threads = 1 if small_model else max(1, min(num_cpus, MAX_DEFAULT_THREADS))
        why = f"default for {'a small model on ' * small_model}{num_cpus} CPU{'s' * (num_cpus > 1)}"
    return ThreadPolicy(threads, "PASSIVE" if threads > 1 else None, why)


def apply_thread_policy(policy: ThreadPolicy, environ: MutableMapping[str, str] | None = None) -> AppliedThreads:
    """Put ``policy`` into effect for this process (and the processes it starts).

    Sets ``OMP_NUM_THREADS``; when torch has not been imported yet, also the OpenMP wait knobs
    (``OMP_WAIT_POLICY``, ``KMP_BLOCKTIME``; a value the user exported is kept) and caps
    ``NUMBA_NUM_THREADS`` before numba loads; then ``torch.set_num_threads``. Call it before
    anything imports torch so that the wait policy takes effect.

    Args:
        policy: from ``choose_thread_policy``.
        environ: the environment to edit (default ``os.environ``; tests pass a dict).

    Returns:
        ``AppliedThreads``.
    """
    env = os.environ if environ is None else environ
    before_runtime = "torch" not in sys.modules
    env["OMP_NUM_THREADS"] = str(policy.threads)
    if before_runtime and policy.wait_policy is not None:
        env.setdefault("OMP_WAIT_POLICY", policy.wait_policy)
        if policy.wait_policy == "PASSIVE":
            env.setdefault("KMP_BLOCKTIME", "0")  # Intel OpenMP's equivalent (ms of spinning)
    if "numba" not in sys.modules:
        env["NUMBA_NUM_THREADS"] = str(min(policy.threads, available_cpus()))
    import torch

    torch.set_num_threads(policy.threads)
    return AppliedThreads(policy, wait_policy_applied=before_runtime or policy.wait_policy is None)


def env_thread_count(environ: Mapping[str, str] | None = None) -> int | None:
    """The thread count in ``OMP_NUM_THREADS`` as the user exported it (its first entry: OpenMP allows a
    per-nesting-level list such as ``4,2``), or None when unset or not a positive integer, in which
    case OpenMP ignores it too."""
    env = os.environ if environ is None else environ
    first = env.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(first) if first.isdigit() and int(first) > 0 else None


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; other values are checked."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return device


def _interrupting(signum: int) -> bool:
    """Whether ``signum``'s handler unwinds like Ctrl-C: Python's own, or the CLI's SIGTERM handler."""
    handler = signal.getsignal(signum)
    return handler is signal.default_int_handler or bool(getattr(handler, "_talkface_interrupt", False))


@contextlib.contextmanager
def deferred_interrupt(*, second_escapes: bool = False) -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) and SIGTERM until the block ends, so that work which must happen together (an
    optimizer step and the bookkeeping that records it; a batch of stream frames and every output it goes
    to) happens together or not at all; then deliver the first one to its handler. A no-op outside the main
    thread, and for a signal with a custom handler. ``second_escapes``: a second signal while held is
    delivered at once (a stream blocked on a reader that stopped reading can still be stopped).
    """
    held = [s for s in (signal.SIGINT, signal.SIGTERM) if _interrupting(s)]
    if threading.current_thread() is not threading.main_thread() or not held:
        yield
        return
    caught: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        caught.append(signum)
        if second_escapes and len(caught) > 1:
            previous[signum](signum, frame)

    previous = {s: signal.signal(s, hold) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if caught:
        previous[caught[0]](caught[0], None)
