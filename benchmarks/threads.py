"""Benchmark the CPU thread policy: training speed on an idle machine and next to 2 busy processes.

Two workloads, each timed in a fresh child process (the OpenMP wait policy is read when torch loads):

* *demo*: the demo recipe (``talkface demo``'s corpus and ``TrainConfig``: tiny random-init encoder,
  soft-DTW with band 2, batch 8), 2 epochs; the ``seconds`` of epoch 2 (an epoch's training steps plus
  its validation by autoregressive generation). Epoch 1 warms up (allocator, numba cache).
* *base*: one autoregressive training step at wav2vec2-base dimensions (``benchmarks/train_step.py``'s
  step: 4 s clip, vocaset preset, V 5023, D 64, soft-DTW, Adam), median of 2 after a warm-up step.

The old behaviour (2 threads, libgomp's default wait) next to busy processes is 20-100× slower, so it
is measured in round 1 only, on epoch 1 / the first step (warm-up included: a small share of it).

Variants: 1 thread; 2 threads with libgomp's default waiting (spin, then sleep: torch's behaviour
without a policy); 2 threads with ``OMP_WAIT_POLICY=PASSIVE``; and the default policy of
``talkface.runtime.choose_thread_policy`` for that model, run through ``apply_thread_policy``. Loads:
*idle* (whatever else runs on the machine; ``uptime``'s load is recorded per cell) and *busy*: two
``python -c "while True: pass"`` processes that this script starts before the cell and kills after it.
Cells are interleaved: every round runs every (workload, load, variant), with the load order flipped
on odd rounds, so drifting background load hits all variants alike; the table gives medians over rounds.

Writes the "## Threads" section of docs/benchmarks.md (other sections are kept) and the raw cells as
JSON (``--json``). ``--quick`` runs tiny shapes for seconds (no busy processes) and writes nothing.

    python benchmarks/threads.py [--rounds 2] [--data DIR] [--json PATH] [--no-write] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _docs import cpu_name, write_section  # benchmarks/ is on sys.path when run as a script

SECTION = "## Threads"
HERE = Path(__file__).resolve()
VARIANTS = {  # name -> (threads, OMP_WAIT_POLICY) ; "default" asks talkface.runtime
    "1 thread": (1, None),
    "2 threads": (2, None),
    "2 threads, passive": (2, "PASSIVE"),
    "default": (None, None),
}
# Variables the child must not inherit: each variant sets its own.
_THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "MKL_NUM_THREADS",
               "NUMBA_NUM_THREADS")


# ------------------------------------------------------------------------------------------ child side
def child(workload: str, variant: str, data: Path, quick: bool, once: bool = False) -> dict[str, Any]:
    """Apply the variant's policy before torch loads, then time the workload."""
    from talkface.runtime import ThreadPolicy, apply_thread_policy, available_cpus, choose_thread_policy

    threads, wait = VARIANTS[variant]
    if threads is None:
        policy = choose_thread_policy(None, num_cpus=available_cpus())
    else:
        policy = ThreadPolicy(threads, wait, variant)
    applied = apply_thread_policy(policy)
    import torch

    out = {"threads": torch.get_num_threads(), "wait_policy": os.environ.get("OMP_WAIT_POLICY"),
           "wait_applied": applied.wait_policy_applied}
    if workload == "demo":
        return {**out, **time_demo_epochs(data, quick, once)}
    return {**out, **time_base_step(quick, once)}


def demo_config(epochs: int) -> Any:
    from talkface.demo import demo_train_config

    return demo_train_config(epochs)


def time_demo_epochs(data: Path, quick: bool, once: bool = False) -> dict[str, Any]:
    """Median epoch seconds of epochs 2.. (``once``: epoch 1 alone, warm-up included)."""
    from talkface.train import train

    epochs = 1 if once else 2
    with tempfile.TemporaryDirectory() as tmp:
        result = train(data, Path(tmp) / "run", demo_config(epochs), device="cpu")
    seconds = [h["seconds"] for h in result.history[0 if once else 1:]]
    return {"seconds": statistics.median(seconds), "all": [h["seconds"] for h in result.history]}


def time_base_step(quick: bool, once: bool = False) -> dict[str, Any]:
    """Median of 2 steps after a warm-up step (``once``: the first step alone)."""
    import train_step as ts

    shapes = ts.quick_shapes() if quick else ts.full_shapes()
    model = ts.build_model(shapes).train()
    from talkface.config import TrainConfig

    step = ts.step_fn(model, ts.make_batch(model, shapes, 1), TrainConfig(loss="softdtw", gamma=1e-3),
                      ts.loss_talkface)
    if once:
        times = [ts.time_call(step)]
    else:
        step()  # warm-up
        times = [ts.time_call(step) for _ in range(2)]
    return {"seconds": statistics.median(times), "all": times}


# ------------------------------------------------------------------------------------------ parent side
def make_demo_data(root: Path, quick: bool) -> Path:
    """The demo's corpus (6 speakers x 8 sentences, espeak-ng when installed), prepared; reused if there."""
    from talkface.data import prepare_vocaset
    from talkface.synthetic import write_synthetic_vocaset

    data = root / "data"
    if (root / "manifest.jsonl").is_file():  # --data given as the prepared folder itself
        return root
    if (data / "manifest.jsonl").is_file():
        return data
    speakers, sentences = (2, 3) if quick else (6, 8)
    write_synthetic_vocaset(root / "raw", num_speakers=speakers, num_sentences=sentences, use_espeak=not quick)
    prepare_vocaset(root / "raw", data, splits=root / "raw" / "splits.toml", overwrite=True)
    return data


def start_busy(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def stop_busy(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait()


def run_cell(workload: str, variant: str, load: str, data: Path, quick: bool, once: bool = False) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in _THREAD_ENV}
    busy = start_busy(2) if load == "busy" else []
    try:
        time.sleep(0.5 if busy else 0.0)  # let the spinners get going
        start_load = os.getloadavg()[0]
        args = [sys.executable, str(HERE), "--child", workload, variant, "--data", str(data)]
        args += (["--quick"] if quick else []) + (["--once"] if once else [])
        proc = subprocess.run(args, env=env, capture_output=True, text=True)
    finally:
        stop_busy(busy)
    if proc.returncode != 0:
        raise RuntimeError(f"{workload}/{variant}/{load} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"workload": workload, "variant": variant, "load": load, "load1": start_load, "once": once, **result}


def run_all(rounds: int, data: Path, quick: bool, log: Any, cells_out: list[dict[str, Any]],
            save: Any = lambda: None, variants: tuple[str, ...] = tuple(VARIANTS)) -> None:
    loads = ["idle"] if quick else ["idle", "busy"]
    for r in range(rounds):
        order = loads if r % 2 == 0 else loads[::-1]
        for workload in ("demo", "base"):
            for load in order:
                for variant in variants:
                    # torch's old behaviour next to busy processes is 20-100x slower: measured once, in
                    # round 1, on one epoch/step, so that the run ends within the hour
                    baseline = variant == "2 threads" and load == "busy"
                    if baseline and r > 0:
                        continue
                    cell = run_cell(workload, variant, load, data, quick, once=baseline)
                    cell["round"] = r + 1
                    cells_out.append(cell)
                    save()
                    log(f"round {r + 1} {workload:4s} {load:4s} {variant:20s} {cell['seconds']:7.2f} s "
                        f"(threads {cell['threads']}, wait {cell['wait_policy']}, load {cell['load1']:.1f})")


def effective_variant(cell: dict[str, Any]) -> str:
    """The named variant a cell ran: a "default" cell counts as the policy it resolved to."""
    if cell["variant"] != "default":
        return cell["variant"]
    if cell["threads"] == 1:
        return "1 thread"
    return "2 threads, passive" if cell["wait_policy"] == "PASSIVE" else "2 threads"


def medians(cells: list[dict[str, Any]]) -> dict[tuple[str, str, str], tuple[float, int]]:
    """(workload, variant, load) -> (median seconds, number of cells)."""
    groups: dict[tuple[str, str, str], list[float]] = {}
    for c in cells:
        groups.setdefault((c["workload"], effective_variant(c), c["load"]), []).append(c["seconds"])
    return {k: (statistics.median(v), len(v)) for k, v in groups.items()}


def default_variant() -> str:
    from talkface.runtime import available_cpus, choose_thread_policy

    p = choose_thread_policy(None, num_cpus=available_cpus())
    return effective_variant({"variant": "default", "threads": p.threads, "wait_policy": p.wait_policy})


def render(cells: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    m = medians(cells)
    loads1 = [c["load1"] for c in cells]
    lines = [
        SECTION, "",
        "`python benchmarks/threads.py`: training speed at each CPU thread policy, on the machine as it is "
        "(*idle*: other helpers' jobs still ran, see the load) and next to two `python -c \"while True: pass\"` "
        "processes the script starts and kills around each cell (*busy*). *demo*: the demo recipe's epoch "
        "(tiny encoder, soft-DTW band 2, batch 8: training steps plus validation), epoch 2 of 2. "
        "*base*: one training step at wav2vec2-base dimensions (4 s clip, V 5023, D 64, soft-DTW, Adam), median "
        "of 2 after a warm-up. Each cell is a fresh process (the OpenMP wait policy is read when torch loads); "
        f"cells interleaved over {meta['rounds']} rounds, medians. The old behaviour (2 threads, libgomp's "
        "default wait) under load is so slow that it ran in round 1 only, on epoch 1 / the first step.",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} CPUs, torch {meta['torch']}; {meta['date']}; `uptime` load "
        f"(1 min) at the cells' start {min(loads1):.1f}–{max(loads1):.1f} (busy cells include the 2 spinners), "
        f"at the start of the run: {meta['uptime']}.",
        "",
        "| workload | policy | idle (cells) | 2 busy (cells) | busy / idle | busy / default's idle |",
        "|---|---|---:|---:|---:|---:|",
    ]
    default = default_variant()
    for workload, unit in (("demo", "s/epoch"), ("base", "s/step")):
        base_idle = m.get((workload, default, "idle"), (None, 0))[0]
        for variant in [v for v in VARIANTS if v != "default"]:
            idle, n_idle = m.get((workload, variant, "idle"), (None, 0))
            busy, n_busy = m.get((workload, variant, "busy"), (None, 0))
            name = f"**{variant} (default)**" if variant == default else variant
            if variant == "2 threads":
                name += " (torch's default: before this policy)"
            cells_txt = [f"{idle:.2f} {unit} ({n_idle})" if idle else "–",
                         f"{busy:.2f} {unit} ({n_busy})" if busy else "–",
                         f"{busy / idle:.1f}×" if idle and busy else "–",
                         f"{busy / base_idle:.1f}×" if base_idle and busy else "–"]
            lines.append(f"| {workload} | {name} | " + " | ".join(cells_txt) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", type=Path, default=None, help="prepared demo corpus (made when missing)")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw cells here")
    parser.add_argument("--from-json", type=Path, default=None, help="render the section from saved cells")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, idle only, seconds; writes nothing")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="run only these (e.g. to add rounds without the slow old behaviour)")
    parser.add_argument("--merge", type=Path, nargs="*", default=[],
                        help="also count the cells of these earlier --json runs (same design)")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("WORKLOAD", "VARIANT"), help=argparse.SUPPRESS)
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.data, args.quick, args.once)))
        return {}
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
    else:
        root = Path(tempfile.gettempdir()) / ("talkface-threads-quick" if args.quick else "talkface-threads")
        data = make_demo_data(args.data or root, args.quick)
        uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        import torch

        cells: list[dict[str, Any]] = []
        meta = {"rounds": 1 if args.quick else args.rounds, "uptime": uptime, "torch": torch.__version__,
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        saved = {"meta": meta, "cells": cells}

        def save() -> None:  # after every cell, so an interrupted run keeps what it measured
            if args.json:
                args.json.write_text(json.dumps(saved, indent=1))

        run_all(meta["rounds"], data, args.quick, lambda msg: print(msg, file=sys.stderr, flush=True), cells, save,
                tuple(args.variants))
    for path in args.merge:
        earlier = json.loads(path.read_text())
        saved = {"meta": {**saved["meta"], "rounds": saved["meta"]["rounds"] + earlier["meta"]["rounds"],
                          "uptime": earlier["meta"]["uptime"] + "; " + saved["meta"]["uptime"]},
                 "cells": earlier["cells"] + saved["cells"]}
    text = render(saved["cells"], saved["meta"])
    print(text)
    if not (args.no_write or args.quick):
        write_section(text)
    return saved


if __name__ == "__main__":
    main()
