"""Benchmark autoregressive decoding and ``animate``'s real-time factor, on 2 CPU threads.

1. Decoding only (random audio features, D 64, V*3 15069, 4 heads, 1 layer, period 30, eval, no grad):
   FaceFormer's recompute loop (``TalkFaceModel.decode_recompute``: every step re-runs
   ``nn.TransformerDecoderLayer`` on the whole prefix and maps every position to 15069 offsets) against
   the key/value-cached decoder (``TalkFaceModel.decode``), for 600 (FaceFormer's limit, 20 s) and
   3000 frames (100 s). Rounds are interleaved so load from other processes hits both alike; medians.
2. ``animate`` on a 10 s wav with wav2vec2-base dimensions (random weights, vocaset preset): load the
   wav, ``generate``; real-time factor = wall time / 10 s, after one warm-up call.
3. A 5-minute wav through the same model in a fresh process: wall time and peak resident memory.

Writes the "## Decoding" section of docs/benchmarks.md (other sections are kept).

    python benchmarks/decode.py [--frames 600 3000] [--rounds 3] [--no-long] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _docs import cpu_name, write_section  # benchmarks/ is on sys.path when run as a script

from talkface.config import ModelConfig
from talkface.io.audio import load_audio, write_wav
from talkface.model import TalkFaceModel, tiny_encoder_config, wav2vec2_base_config
from talkface.presets import VOCASET_TRAIN, get_preset

THREADS = 2
SECTION = "## Decoding"


def vocaset_config() -> ModelConfig:
    return ModelConfig(**get_preset("vocaset").model_kwargs(), speakers=VOCASET_TRAIN)


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """A voiced-looking test signal: 120-240 Hz buzz with syllable-rate envelope, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    pitch = 180 + 60 * np.sin(2 * np.pi * 0.5 * t)
    buzz = np.sign(np.sin(2 * np.pi * np.cumsum(pitch) / 16000))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None)
    return (0.3 * buzz * envelope + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def decoding_model() -> TalkFaceModel:
    torch.manual_seed(0)
    model = TalkFaceModel(vocaset_config(), tiny_encoder_config()).eval()  # the encoder is not used here
    torch.nn.init.normal_(model.motion_head.weight, std=1e-3)
    return model


def time_call(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_decoding(frames: list[int], rounds: int) -> list[dict]:
    model = decoding_model()
    rows = []
    with torch.no_grad():
        style = model.style_embedding(torch.eye(8)[:1])
        model.decode(torch.randn(1, 30, 64), style, 30)  # warm-up
        for n in frames:
            memory = torch.randn(1, n, 64, generator=torch.Generator().manual_seed(n))
            kv, ref, diff = [], [], None
            for r in range(rounds if n <= 1000 else 1):
                kv.append(time_call(lambda: model.decode(memory, style, n)))  # noqa: B023
                ref.append(time_call(lambda: model.decode_recompute(memory, style, n)))  # noqa: B023
                print(f"  {n} frames, round {r + 1}: kv {kv[-1]:.2f} s, recompute {ref[-1]:.2f} s", file=sys.stderr)
            if n <= 1000:
                diff = float((model.decode(memory, style, n) - model.decode_recompute(memory, style, n)).abs().max())
            rows.append({"frames": n, "kv": statistics.median(kv), "recompute": statistics.median(ref),
                         "rounds": len(kv), "max_abs_diff": diff})
    return rows


def bench_animate(seconds: float = 10.0, rounds: int = 5) -> dict:
    torch.manual_seed(0)
    model = TalkFaceModel(vocaset_config(), wav2vec2_base_config()).eval()
    template, style = torch.zeros(5023, 3), torch.eye(8)[0]
    with tempfile.TemporaryDirectory() as tmp:
        wav = write_wav(Path(tmp) / "speech.wav", speech_like(seconds))
        first = time_call(lambda: model.generate(torch.from_numpy(load_audio(wav)), template, style))
        totals, encoder, decoder = [], [], []
        for _ in range(rounds):
            start = time.perf_counter()
            audio = torch.from_numpy(load_audio(wav))
            vertices = model.generate(audio, template, style)
            totals.append(time.perf_counter() - start)
            frames = vertices.shape[0]
            with torch.no_grad():  # the two halves separately, for the breakdown
                t0 = time.perf_counter()
                memory, _ = model.encode_audio(audio[None], torch.tensor([audio.shape[0]]), torch.tensor([frames]))
                t1 = time.perf_counter()
                model.decode(memory, model.style_embedding(style[None]), frames)
                encoder.append(t1 - t0)
                decoder.append(time.perf_counter() - t1)
    total = statistics.median(totals)
    return {"seconds": seconds, "frames": frames, "first": first, "total": total, "rtf": total / seconds,
            "best_rtf": min(totals) / seconds, "encoder": statistics.median(encoder),
            "decoder": statistics.median(decoder)}


def long_worker(seconds: float) -> None:
    """Child process: generate on a long wav, print wall time and peak RSS (MiB)."""
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    model = TalkFaceModel(vocaset_config(), wav2vec2_base_config()).eval()
    with tempfile.TemporaryDirectory() as tmp:
        wav = write_wav(Path(tmp) / "long.wav", speech_like(seconds))
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        start = time.perf_counter()
        out = model.generate(torch.from_numpy(load_audio(wav)), torch.zeros(5023, 3), torch.eye(8)[0])
        wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{wall} {peak} {base} {out.shape[0]}")


def bench_long(seconds: float = 300.0) -> dict:
    out = subprocess.run([sys.executable, __file__, "--long-worker", str(seconds)], capture_output=True, text=True,
                         check=True)
    wall, peak, base, frames = out.stdout.split()
    return {"seconds": seconds, "wall": float(wall), "peak_mib": float(peak), "base_mib": float(base),
            "frames": int(frames)}


def render(decoding: list[dict], animate: dict | None, long: dict | None, load: str) -> str:
    lines = [
        SECTION, "",
        "`python benchmarks/decode.py`: autoregressive decoding on 2 threads, float32, eval, no grad, D 64, "
        "V·3 15069, 4 heads, 1 decoder layer, period 30, random audio features. *Recompute* is FaceFormer's loop "
        "(each step re-runs `nn.TransformerDecoderLayer` over the whole prefix with the full masks and maps every "
        "position to 15069 offsets); *KV cache* is talkface's `decode` (one token per step, cached keys/values, "
        "alignment-windowed cross-attention). Medians of interleaved rounds.",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {THREADS} threads; "
        f"load average at start {load} (other jobs share the CPUs).",
        "",
        "| frames | recompute (FaceFormer) | KV cache (talkface) | speed-up | max abs diff |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in decoding:
        diff = "–" if row["max_abs_diff"] is None else f"{row['max_abs_diff']:.1e}"
        lines.append(f"| {row['frames']} | {row['recompute']:.2f} s | {row['kv']:.3f} s | "
                     f"{row['recompute'] / row['kv']:.0f}× | {diff} |")
    if animate:
        lines += [
            "",
            f"`animate` on a {animate['seconds']:.0f} s wav (wav2vec2-base dimensions, random weights, vocaset preset, "
            f"{animate['frames']} frames): load + `generate` {animate['total']:.2f} s → **real-time factor "
            f"{animate['rtf']:.3f}** (median of 5; best {animate['best_rtf']:.3f}; encoder {animate['encoder']:.2f} s, "
            f"decoder {animate['decoder']:.2f} s; first call in the process {animate['first']:.2f} s).",
        ]
    if long:
        lines += [
            "",
            f"A {long['seconds'] / 60:.0f}-minute wav ({long['frames']} frames) through the same model in a fresh "
            f"process: {long['wall']:.0f} s, peak RSS {long['peak_mib']:.0f} MiB ({long['base_mib']:.0f} MiB before "
            "generating). The CNN runs in exact 10 s chunks, the transformer in 30 s windows with 5 s blended overlap.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, nargs="*", default=[600, 3000], help="none: skip decoding")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-animate", action="store_true")
    parser.add_argument("--no-long", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--long-worker", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.long_worker:
        long_worker(args.long_worker)
        return
    torch.set_num_threads(THREADS)
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    decoding = bench_decoding(args.frames, args.rounds) if args.frames else []
    animate = None if args.no_animate else bench_animate()
    long = None if args.no_long else bench_long()
    text = render(decoding, animate, long, load)
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
