"""Benchmark ``prepare vocaset`` on a synthetic VOCASET-sized corpus: peak memory and throughput.

Writes a raw corpus in VOCASET's exact layout into a temporary folder -- a ``data_verts.npy`` of at least
``--gb`` GB (5023-vertex float32 frames at 60 fps, written in chunks), ``raw_audio_fixed.pkl`` (int16 at
22 kHz), ``subj_seq_to_idx.pkl`` and ``templates.pkl`` for VOCA's 12 speakers -- drops the file from the
page cache (``posix_fadvise``), then runs ``prepare_vocaset`` in a child process and reports its peak RSS
(``VmHWM``), its RSS before preparing, wall time and clips/s; then a second, resumed run.

    python benchmarks/prepare.py [--gb 2.2] [--clip-seconds 4] [--tmp DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

V = 5023
SOURCE_FPS = 60
AUDIO_RATE = 22000


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def write_corpus(raw: Path, gigabytes: float, clip_seconds: float, seed: int = 0) -> dict[str, float]:
    """Write the four VOCASET files; return sizes."""
    from talkface.presets import VOCASET_TEST, VOCASET_TRAIN, VOCASET_VAL

    rng = np.random.default_rng(seed)
    speakers = VOCASET_TRAIN + VOCASET_VAL + VOCASET_TEST
    frame_bytes = V * 3 * 4
    frames_per_clip = int(clip_seconds * SOURCE_FPS)
    num_clips = -(-int(gigabytes * 1e9) // (frame_bytes * frames_per_clip))
    templates = {s: rng.normal(scale=0.05, size=(V, 3)).astype(np.float32) for s in speakers}
    seq: dict[str, dict[str, dict[int, int]]] = {s: {} for s in speakers}
    audio: dict[str, dict[str, dict[str, object]]] = {s: {} for s in speakers}
    raw.mkdir(parents=True, exist_ok=True)
    path = raw / "data_verts.npy"
    t = np.arange(frames_per_clip, dtype=np.float32)[:, None, None] / SOURCE_FPS
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                 "shape": (num_clips * frames_per_clip, V, 3)})
        for i in range(num_clips):
            speaker = speakers[i % len(speakers)]
            # count down from sentence40 so that val/test speakers (sentences 21-40) get clips too
            k = i // len(speakers)
            sentence = f"sentence{40 - k:02d}" if k < 40 else f"sentence{k + 1:03d}"
            motion = templates[speaker] + 0.005 * np.sin(2 * np.pi * 3 * t + rng.uniform(0, 6, size=(1, V, 1)))
            f.write(motion.astype(np.float32).tobytes())
            first = i * frames_per_clip
            seq[speaker][sentence] = {k: first + k for k in range(frames_per_clip)}
            samples = int(clip_seconds * AUDIO_RATE)
            wave = 0.3 * np.sin(2 * np.pi * 200 * np.arange(samples) / AUDIO_RATE) + 0.01 * rng.normal(size=samples)
            audio[speaker][sentence] = {"audio": (wave * 32767).astype(np.int16), "sample_rate": AUDIO_RATE}
        f.flush()
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # read it cold, as from a fresh download
    (raw / "raw_audio_fixed.pkl").write_bytes(pickle.dumps(audio, protocol=2))
    (raw / "subj_seq_to_idx.pkl").write_bytes(pickle.dumps(seq, protocol=2))
    (raw / "templates.pkl").write_bytes(pickle.dumps(templates, protocol=2))
    return {"clips": num_clips, "frames": num_clips * frames_per_clip, "data_verts_gb": path.stat().st_size / 1e9}


def child(raw: str, out: str) -> None:
    """Run one prepare and print its measurements as JSON (run in a fresh process)."""
    from talkface.data import prepare_vocaset

    rss_before = _status_kib("VmRSS")
    start = time.perf_counter()
    report = prepare_vocaset(raw, out)
    seconds = time.perf_counter() - start
    done = report.written + report.reused
    print(json.dumps({"seconds": seconds, "clips": done, "written": report.written, "reused": report.reused,
                      "clips_per_s": done / seconds, "rss_before_mib": rss_before / 1024,
                      "peak_rss_mib": _status_kib("VmHWM") / 1024, "minutes": report.minutes,
                      "per_split": report.clips_per_split}))


def run_child(raw: Path, out: Path) -> dict[str, object]:
    result = subprocess.run([sys.executable, __file__, "--child", str(raw), str(out)], check=True,
                            capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=2.2, help="size of data_verts.npy in GB (default 2.2)")
    parser.add_argument("--clip-seconds", type=float, default=4.0, help="seconds per clip (default 4)")
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the temporary corpus")
    parser.add_argument("--keep", action="store_true", help="keep the temporary corpus")
    parser.add_argument("--child", nargs=2, metavar=("RAW", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    work = Path(tempfile.mkdtemp(prefix="talkface-bench-prepare-", dir=args.tmp))
    try:
        start = time.perf_counter()
        corpus = write_corpus(work / "raw", args.gb, args.clip_seconds)
        corpus["write_seconds"] = time.perf_counter() - start
        first = run_child(work / "raw", work / "out")
        resumed = run_child(work / "raw", work / "out")
        out_gb = sum(p.stat().st_size for p in (work / "out").rglob("*") if p.is_file()) / 1e9
        print(json.dumps({"corpus": corpus, "prepare": first, "resume": resumed, "prepared_gb": out_gb,
                          "cpu_count": os.cpu_count()}, indent=2))
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
