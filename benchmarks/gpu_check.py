"""GPU readiness check: the ``gpu``-marked tests, a training step and the soft-DTW loss on CUDA against the
CPU, and the demo corpus trained for a few epochs with ``--amp``; one markdown table.

One command on a bare GPU machine (python3 with torch, transformers, numpy, numba, safetensors, typer, rich)::

    PYTHONPATH=. python3 benchmarks/gpu_check.py --out gpu_check.md [--write-doc]

Every row degrades on its own: a missing optional package (pytest, soxr, matplotlib, ...) or a failure
gives a row that says ``skipped: <reason>`` or ``failed: <error>``, never a crash. Without soxr the
demo corpus is resampled by an FFT resampler (timing only); without matplotlib no loss plot is drawn.
Without a CUDA device the script says so and exits 0 (``--cpu`` still measures the CPU column). The
whole run stays under ``--budget`` seconds (default 270): rows that would start later are skipped.

Rows: environment; ``pytest -m gpu``; one training step (4 s clip, wav2vec2-base dimensions, random
weights, vocaset preset, CNN feature cache warm, Adam) at batch 1 and 8 on the CPU and on CUDA, and on
CUDA under bfloat16 autocast, with the loss of the same eval-mode step on both devices compared;
soft-DTW forward + backward (γ 1e-3) at (8, 120, 15069) and (1, 600, 15069), values compared; an epoch
of ``talkface demo``'s recipe (its corpus, batch 8) on the CPU and on CUDA in float32, and on CUDA with
``--amp``. Medians of ``--rounds`` timed calls after one warm-up call; CUDA timings synchronise.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # train_step's helpers

import train_step  # noqa: E402

from talkface.config import TrainConfig  # noqa: E402
from talkface.losses import soft_dtw  # noqa: E402
from talkface.model import FeatureCache  # noqa: E402

TITLE = "## GPU check"


@dataclass
class Row:
    """One line of the table."""

    check: str
    cpu: str = "–"
    cuda: str = "–"
    speedup: str = "–"
    notes: str = ""


class Budget:
    """Wall-clock budget for the whole check."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.perf_counter()

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}"


def guarded(rows: list[Row], budget: Budget, label: str, need_s: float, fn: Callable[[], list[Row]],
            log: Callable[[str], None]) -> None:
    """Run one check; a missing package, an error or an exhausted budget becomes a row saying so."""
    if budget.left() < need_s:
        rows.append(Row(label, notes=f"skipped: time budget used up ({budget.left():.0f} s left, needs ~{need_s:.0f})"))
        return
    log(f"{label} ...")
    t0 = time.perf_counter()
    try:
        rows.extend(fn())
    except ImportError as e:
        rows.append(Row(label, notes=f"skipped: {e.name or 'a module'} is not installed ({_short(e)})"))
    except Exception as e:  # one broken check must not hide the others
        log(traceback.format_exc())
        rows.append(Row(label, notes=f"failed: {_short(e)}"))
    log(f"{label}: {time.perf_counter() - t0:.1f} s")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str, rounds: int) -> float:
    """Median seconds of ``rounds`` calls after one warm-up call."""
    fn()
    sync(device)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def ratio(cpu: float | None, cuda: float | None) -> str:
    return "–" if not cpu or not cuda else f"{cpu / cuda:.1f}×"


# ------------------------------------------------------------------------------------------ checks


def environment(cuda: bool) -> list[Row]:
    cpu = f"{train_step.cpu_name()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads"
    if cuda:
        props = torch.cuda.get_device_properties(0)
        gpu = (f"{props.name}, {props.total_memory / 2**30:.0f} GiB, sm {props.major}.{props.minor}, "
               f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
    else:
        gpu = "skipped: no CUDA device"
    versions = f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda})"
    missing = [m for m in ("pytest", "soxr", "soundfile", "matplotlib", "trimesh", "pyrender")
               if importlib.util.find_spec(m) is None]
    return [Row("machine", cpu, gpu, notes=f"{versions}; not installed: {', '.join(missing) or 'none'}")]


def gpu_tests(timeout: float) -> list[Row]:
    if importlib.util.find_spec("pytest") is None:
        return [Row("`pytest -m gpu`", notes="skipped: pytest is not installed")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rfEs", "tests"]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [Row("`pytest -m gpu`", cuda=f"failed: over {timeout:.0f} s")]
    seconds = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    summary = lines[-1].strip("= ") if lines else f"exit code {proc.returncode}"
    problems = [line[:160] for line in lines if line.startswith(("FAILED", "ERROR", "SKIPPED"))][:4]
    notes = f"exit {proc.returncode}, {seconds:.0f} s" + ("; " + "; ".join(problems) if problems else "")
    return [Row("`pytest -m gpu`", cuda=summary, notes=notes)]


def _step(shapes: train_step.Shapes, batch: int, device: str, rounds: int,
          amp: bool = False) -> tuple[float, float]:
    """(median seconds of one cached training step, eval-mode loss) on ``device``."""
    config = TrainConfig(loss="softdtw", gamma=1e-3)
    model = train_step.build_model(shapes)
    b = train_step.make_batch(model, shapes, batch)
    model.to(device)
    b = {k: v.to(device) for k, v in b.items()}
    cache = FeatureCache(2**30)
    model.audio_encoder.feature_cache = cache
    model.eval()
    with torch.no_grad():
        loss = float(train_step.loss_talkface(model, b, config))
    model.train()
    optimizer = train_step.make_optimizer(model, config.lr)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()

    def one() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            out = model(b["audio"], b["audio_lengths"], b["template"], b["style"], b["num_frames"])
        train_step.sequence_loss(out.vertices.float(), b["vertices"], b["num_frames"], config).backward()
        optimizer.step()

    seconds = timed(one, device, rounds)
    return seconds, loss


def training_steps(shapes: train_step.Shapes, batches: list[int], cuda: bool, cpu: bool, rounds: int) -> list[Row]:
    rows = []
    for batch in batches:
        cpu_s = cpu_loss = cuda_s = cuda_loss = None
        if cpu:
            cpu_s, cpu_loss = _step(shapes, batch, "cpu", rounds)
        if cuda:
            cuda_s, cuda_loss = _step(shapes, batch, "cuda", rounds)
        notes = f"{batch / cuda_s:.1f} clips/s on CUDA" if cuda_s else ""
        if cpu_loss is not None and cuda_loss is not None:
            notes += f"; eval loss CPU {cpu_loss:.6g}, CUDA {cuda_loss:.6g} (rel diff " \
                     f"{abs(cpu_loss - cuda_loss) / abs(cpu_loss):.1e})"
        rows.append(Row(f"training step, {shapes.seconds:g} s clip, batch {batch}", fmt_s(cpu_s),
                        fmt_s(cuda_s) if cuda else "skipped: no CUDA device", ratio(cpu_s, cuda_s), notes))
    if cuda:
        batch = batches[-1]
        if not torch.cuda.is_bf16_supported():
            rows.append(Row(f"training step, batch {batch}, bf16 autocast", notes="skipped: no bf16 on this GPU"))
        else:
            amp_s, _ = _step(shapes, batch, "cuda", rounds, amp=True)
            rows.append(Row(f"training step, batch {batch}, bf16 autocast (--amp)", cuda=fmt_s(amp_s),
                            notes=f"{batch / amp_s:.1f} clips/s"))
    return rows


def flame_like(batch: int, frames: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    face = 0.1 * torch.randn(batch, 1, dim, generator=g)
    x = face + 3e-3 * torch.randn(batch, frames, dim, generator=g)
    y = face + 3e-3 * torch.randn(batch, frames, dim, generator=g)
    return x, y


def softdtw_rows(shapes_list: list[tuple[int, int, int]], cuda: bool, cpu: bool, rounds: int) -> list[Row]:
    rows = []
    for batch, frames, dim in shapes_list:
        x0, y0 = flame_like(batch, frames, dim, seed=batch + frames)
        results: dict[str, tuple[float, torch.Tensor]] = {}
        for device in (["cpu"] if cpu else []) + (["cuda"] if cuda else []):
            x, y = x0.to(device), y0.to(device)

            def run(x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
                a = x.clone().requires_grad_(True)
                value = soft_dtw(a, y, 1e-3, reduction="mean")
                value.backward()
                return value.detach()

            seconds = timed(run, device, rounds)
            results[device] = (seconds, run().double().cpu())
        cpu_s = results.get("cpu", (None,))[0]
        cuda_s = results.get("cuda", (None,))[0]
        notes = ""
        if len(results) == 2:
            c, g = results["cpu"][1], results["cuda"][1]
            notes = f"value rel diff CPU vs CUDA {float((c - g).abs().max() / c.abs().max()):.1e}"
        rows.append(Row(f"soft-DTW fwd+bwd ({batch}, {frames}, {dim})", fmt_s(cpu_s),
                        fmt_s(cuda_s) if cuda else "skipped: no CUDA device", ratio(cpu_s, cuda_s), notes))
    return rows


def _fft_resample(audio: np.ndarray, source_rate: int, target_rate: int = 16_000) -> np.ndarray:
    """Band-limited resampling by FFT (stand-in for soxr, good enough for timing)."""
    audio = np.asarray(audio, dtype=np.float32)
    if source_rate == target_rate or audio.shape[0] == 0:
        return audio.copy()
    n = audio.shape[0]
    m = max(1, int(round(n * target_rate / source_rate)))
    spectrum = np.fft.rfft(audio, axis=0)
    keep = min(spectrum.shape[0], m // 2 + 1)
    out = np.fft.irfft(spectrum[:keep], n=m, axis=0) * (m / n)
    return out.astype(np.float32)


# Where talkface's modules hold these functions (each imports them by name).
RESAMPLE_USERS = ("talkface.io.audio", "talkface.data.vocaset", "talkface.synthetic.speech")
LOSS_PLOT_USERS = ("talkface.train.loop",)


@contextlib.contextmanager
def bare_machine_stand_ins(notes: list[str]) -> Iterator[None]:
    """Stand-ins for optional packages a bare GPU machine may lack: soxr (resampling), matplotlib (loss.png)."""
    patches: list[tuple[Any, str, Any]] = []
    if importlib.util.find_spec("soxr") is None:
        patches += [(importlib.import_module(m), "resample", _fft_resample) for m in RESAMPLE_USERS]
        notes.append("soxr missing: audio resampled by FFT")
    if importlib.util.find_spec("matplotlib") is None:
        patches += [(importlib.import_module(m), "write_loss_plot", lambda path, history: None)
                    for m in LOSS_PLOT_USERS]
        notes.append("matplotlib missing: no loss.png")
    saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
    for module, name, value in patches:
        setattr(module, name, value)
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def demo_training(epochs: int, cuda: bool, cpu: bool, speakers: int, sentences: int) -> list[Row]:
    from talkface.data import load_prepared, prepare_vocaset
    from talkface.demo import demo_train_config
    from talkface.synthetic import write_synthetic_vocaset
    from talkface.train import train

    notes: list[str] = []
    rows = []
    with tempfile.TemporaryDirectory(prefix="talkface-gpu-check-") as tmp, bare_machine_stand_ins(notes):
        root = Path(tmp)
        report = write_synthetic_vocaset(root / "raw", num_speakers=speakers, num_sentences=sentences)
        prepare_vocaset(root / "raw", root / "data", splits=root / "raw" / "splits.toml")
        train_clips = len(load_prepared(root / "data").split("train"))
        notes.append(f"{train_clips} train clips, {'espeak-ng' if report.used_espeak else 'formant'} speech, "
                     f"{epochs} epochs, median epoch after the first (train part, validation excluded)")

        def run(device: str, amp: bool) -> tuple[float, list[float]]:
            result = train(root / "data", root / f"run-{device}-{amp}", demo_train_config(epochs, amp=amp),
                           device=device)
            history = result.history
            per_epoch = [train_clips / h["clips_per_s"] for h in history]
            losses = [h["train_loss"] for h in history]
            if not all(np.isfinite(losses)):
                raise FloatingPointError(f"non-finite training loss on {device} (amp {amp}): {losses}")
            return statistics.median(per_epoch[1:] or per_epoch), losses

        cpu_s = cpu_losses = cuda_s = None
        if cpu:
            cpu_s, cpu_losses = run("cpu", False)
        if cuda:
            cuda_s, cuda_losses = run("cuda", False)
        loss_note = f"losses CPU {', '.join(f'{x:.4g}' for x in cpu_losses)}" if cpu_losses else ""
        rows.append(Row("demo epoch, float32", fmt_s(cpu_s), fmt_s(cuda_s) if cuda else "skipped: no CUDA device",
                        ratio(cpu_s, cuda_s), "; ".join(filter(None, [*notes, loss_note]))))
        if cuda:
            if torch.cuda.is_bf16_supported():
                amp_s, amp_losses = run("cuda", True)
                rows.append(Row("demo epoch, --amp (bf16)", cuda=fmt_s(amp_s), speedup=ratio(cpu_s, amp_s),
                                notes=f"losses {', '.join(f'{x:.4g}' for x in amp_losses)}"))
            else:
                rows.append(Row("demo epoch, --amp", notes="skipped: no bf16 on this GPU (float16 + GradScaler "
                                                           "is exercised by pytest -m gpu)"))
    return rows


# ------------------------------------------------------------------------------------------ table


def render(rows: list[Row], seconds: float) -> str:
    lines = [TITLE, "",
             f"`PYTHONPATH=. python3 benchmarks/gpu_check.py` ({seconds:.0f} s). Times are medians; "
             "*CUDA speed-up* is CPU time / CUDA time.", "",
             "| check | CPU | CUDA | CUDA speed-up | notes |", "|---|---:|---:|---:|---|"]
    for r in rows:
        cells = [r.check, r.cpu, r.cuda, r.speedup, r.notes]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="demo epochs per run")
    parser.add_argument("--budget", type=float, default=270.0, help="seconds for the whole check")
    parser.add_argument("--cpu", action="store_true", help="without CUDA, still measure the CPU column")
    parser.add_argument("--quick", action="store_true", help="tiny shapes and corpus (a smoke test of this script)")
    parser.add_argument("--write-doc", action="store_true",
                        help="also replace the '## GPU check' section of docs/benchmarks.md with the table")
    args = parser.parse_args(argv)
    budget = Budget(args.budget)
    cuda = torch.cuda.is_available()
    cpu = cuda or args.cpu

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if not cuda:
        log("no CUDA device: torch.cuda.is_available() is False; the CUDA column is skipped"
            + ("" if args.cpu else " (pass --cpu to measure the CPU column anyway)"))
    shapes = train_step.quick_shapes() if args.quick else train_step.full_shapes()
    dtw_shapes = [(2, 20, 30)] if args.quick else [(8, 120, 15069), (1, 600, 15069)]
    demo = (2, 3) if args.quick else (6, 8)
    rows: list[Row] = []
    guarded(rows, budget, "machine", 0, lambda: environment(cuda), log)
    if cuda:
        guarded(rows, budget, "`pytest -m gpu`", 30, lambda: gpu_tests(min(150.0, budget.left() - 100)), log)
    else:
        rows.append(Row("`pytest -m gpu`", cuda="skipped: no CUDA device"))
    if cpu or cuda:
        guarded(rows, budget, "training step", 20,
                lambda: training_steps(shapes, [1, 8] if not args.quick else [1, 2], cuda, cpu, args.rounds), log)
        guarded(rows, budget, "soft-DTW", 10, lambda: softdtw_rows(dtw_shapes, cuda, cpu, args.rounds), log)
        guarded(rows, budget, "demo epoch", 40,
                lambda: demo_training(max(1, args.epochs), cuda, cpu, *demo), log)
    else:
        rows += [Row(name, cuda="skipped: no CUDA device")
                 for name in ("training step", "soft-DTW", "demo epoch, --amp")]
    text = render(rows, args.budget - budget.left())
    print(text, end="")
    if args.out:
        from talkface.io.fileio import write_text_atomic

        write_text_atomic(args.out, text)
        log(f"table written to {args.out}")
    if args.write_doc and not args.quick:
        train_step.write_section(text)
        log("docs/benchmarks.md: '## GPU check' section replaced")
    return 0


if __name__ == "__main__":
    sys.exit(main())
