"""Benchmark one autoregressive training step: talkface's KV-cached decoder vs FaceFormer's recompute loop.

One step = wav2vec 2.0 encoder (CNN frozen) -> autoregressive decoding of every frame -> soft-DTW loss
(gamma 1e-3, squared Euclidean, no band) -> backward -> Adam step, on a 4 s clip (120 frames at 30 fps),
wav2vec2-base dimensions (random init, never downloaded), FLAME V 5023, D 64, vocaset preset, 2 CPU
threads, float32, train mode (dropout on) for the timings.

* *talkface*: ``TalkFaceModel.forward`` (``decode``: one token per step, cached keys/values).
* *recompute*: the same model's encoder, then ``TalkFaceModel.decode_recompute`` (FaceFormer's loop: every
  step re-runs ``nn.TransformerDecoderLayer`` with this model's parameters over the whole prefix and maps
  every position to V*3 offsets); gradients flow through the fed-back frames in both.

Both run on the same weights; with dropout off (eval) their gradients must agree: the report gives the
largest absolute gradient difference over all parameters divided by the largest absolute gradient.
Rounds are interleaved so load from other processes hits both alike; medians. Also clips/s of a full
talkface step at batch 1 and batch 8 (equal-length clips), and the comparison again on a longer clip
(``--longer``), since the recompute loop's cost grows with the square of the length. ``--quick`` runs
tiny shapes in seconds (the test suite runs it so the script cannot rot) and writes nothing.

Writes the "## Training step" section of docs/benchmarks.md (other sections are kept).

    python benchmarks/train_step.py [--rounds 3] [--batches 1 8] [--longer 10] [--no-write] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from _docs import cpu_name, write_section  # benchmarks/ is on sys.path when run as a script

from talkface.config import ModelConfig, TrainConfig
from talkface.model import TalkFaceModel, tiny_encoder_config, wav2vec2_base_config
from talkface.presets import VOCASET_TRAIN, get_preset
from talkface.train import sequence_loss

THREADS = 2
SECTION = "## Training step"


@dataclass(frozen=True)
class Shapes:
    """What one benchmark run uses."""

    seconds: float  # clip length
    encoder: dict[str, Any]  # Wav2Vec2Config dict (random init)
    model: ModelConfig
    label: str


def full_shapes() -> Shapes:
    model = ModelConfig(**get_preset("vocaset").model_kwargs(), speakers=VOCASET_TRAIN)
    return Shapes(4.0, wav2vec2_base_config(), model, "wav2vec2-base dimensions, vocaset preset (V 5023, D 64)")


def quick_shapes() -> Shapes:
    model = ModelConfig(num_vertices=50, feature_dim=16, period=5, num_heads=4, speakers=("a", "b"))
    return Shapes(0.5, tiny_encoder_config(), model, "tiny encoder, V 50, D 16 (quick check, not a measurement)")


def speech_like(seconds: float, seed: int = 0) -> torch.Tensor:
    """(S,) float32 at 16 kHz: a 120-240 Hz buzz with a syllable-rate envelope, plus noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16000), dtype=torch.float64) / 16000
    pitch = 180 + 60 * torch.sin(2 * torch.pi * 0.5 * t)
    buzz = torch.sign(torch.sin(2 * torch.pi * torch.cumsum(pitch, 0) / 16000))
    envelope = torch.sin(2 * torch.pi * 4 * t).clamp(min=0)
    return (0.3 * buzz * envelope).float() + 0.01 * torch.randn(t.numel(), generator=g)


def make_batch(model: TalkFaceModel, shapes: Shapes, batch: int) -> dict[str, torch.Tensor]:
    """``batch`` equal-length clips: audio, template, one-hot styles and mm-scale smooth target motion."""
    cfg = model.config
    samples = int(shapes.seconds * 16000)
    frames = round(shapes.seconds * cfg.fps)  # 120 for 4 s (FaceFormer's own count from the audio gives 119)
    g = torch.Generator().manual_seed(1)
    template = 0.1 * torch.randn(batch, cfg.num_vertices, 3, generator=g)
    t = torch.arange(frames, dtype=torch.float32)[None, :, None, None]
    phase = 6.28 * torch.rand(batch, 1, cfg.num_vertices, 3, generator=g)
    motion = 2e-3 * torch.sin(0.3 * t + phase)  # ~2 mm, like lip motion
    return {"audio": torch.stack([speech_like(shapes.seconds, seed=i) for i in range(batch)]),
            "audio_lengths": torch.full((batch,), samples), "template": template,
            "style": torch.eye(cfg.num_speakers)[torch.arange(batch) % cfg.num_speakers],
            "num_frames": torch.full((batch,), frames), "vertices": template[:, None] + motion}


def build_model(shapes: Shapes) -> TalkFaceModel:
    torch.manual_seed(0)
    model = TalkFaceModel(shapes.model, shapes.encoder)
    # A trained-looking head: the zero init would make every fed-back frame the same token.
    torch.nn.init.normal_(model.motion_head.weight, std=1e-3)
    return model


def loss_talkface(model: TalkFaceModel, b: dict[str, torch.Tensor], config: TrainConfig) -> torch.Tensor:
    out = model(b["audio"], b["audio_lengths"], b["template"], b["style"], b["num_frames"])
    return sequence_loss(out.vertices, b["vertices"], b["num_frames"], config)


def loss_recompute(model: TalkFaceModel, b: dict[str, torch.Tensor], config: TrainConfig) -> torch.Tensor:
    frames = int(b["num_frames"].max())
    memory, _ = model.encode_audio(b["audio"], b["audio_lengths"], b["num_frames"])
    offsets = model.decode_recompute(memory, model.style_embedding(b["style"]), frames)
    vertices = b["template"][:, None] + offsets.view(offsets.shape[0], frames, -1, 3)
    return sequence_loss(vertices, b["vertices"], b["num_frames"], config)


def gradients(model: TalkFaceModel, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def gradient_check(model: TalkFaceModel, b: dict[str, torch.Tensor], config: TrainConfig) -> dict[str, float]:
    """Dropout off: max |g_kv - g_recompute| over all parameters, relative to max |g_kv|."""
    model.eval()
    kv_loss = loss_talkface(model, b, config)
    kv = gradients(model, kv_loss)
    ref_loss = loss_recompute(model, b, config)
    ref = gradients(model, ref_loss)
    model.train()
    if kv.keys() != ref.keys():
        raise RuntimeError(f"different parameters got gradients: {sorted(kv.keys() ^ ref.keys())}")
    scale = max(float(g.abs().max()) for g in kv.values())
    diff = max(float((kv[n] - ref[n]).abs().max()) for n in kv)
    return {"loss_kv": float(kv_loss.detach()), "loss_recompute": float(ref_loss.detach()), "grad_scale": scale,
            "grad_max_abs_diff": diff, "grad_rel_diff": diff / scale}


def step_fn(model: TalkFaceModel, b: dict[str, torch.Tensor], config: TrainConfig,
            loss_fn: Callable[..., torch.Tensor]) -> Callable[[], None]:
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model, b, config).backward()
        optimizer.step()

    return step


def time_call(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(shapes: Shapes, rounds: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Interleaved rounds of the two batch-1 steps on one clip, plus the encoder's share."""
    config = TrainConfig(loss="softdtw", gamma=1e-3)
    model = build_model(shapes).train()
    one = make_batch(model, shapes, 1)
    runs = {"talkface": step_fn(model, one, config, loss_talkface),
            "recompute": step_fn(model, one, config, loss_recompute)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():
        fn()  # warm-up (allocator, numba soft-DTW kernels)
    for r in range(rounds):
        for name, fn in runs.items():
            times[name].append(time_call(fn))
        log(f"  {shapes.seconds:g} s, round {r + 1}: talkface {times['talkface'][-1]:.2f} s, "
            f"recompute {times['recompute'][-1]:.2f} s")

    def encoder_only() -> None:  # forward + backward, common to both: the rest is decoder + loss + Adam
        memory, _ = model.encode_audio(one["audio"], one["audio_lengths"], one["num_frames"])
        memory.sum().backward()

    encoder_only()
    encoder = statistics.median(time_call(encoder_only) for _ in range(rounds))
    kv, ref = statistics.median(times["talkface"]), statistics.median(times["recompute"])
    return {"seconds": shapes.seconds, "frames": int(one["num_frames"][0]), "talkface": kv, "recompute": ref,
            "speedup": ref / kv, "encoder": encoder, "decoder_speedup": (ref - encoder) / max(kv - encoder, 1e-9)}


def bench(shapes: Shapes, rounds: int, batches: list[int], log: Callable[[str], None],
          longer: tuple[float, ...] = ()) -> dict[str, Any]:
    config = TrainConfig(loss="softdtw", gamma=1e-3)
    model = build_model(shapes)
    check = gradient_check(model, make_batch(model, shapes, 1), config)
    log(f"  gradients: rel diff {check['grad_rel_diff']:.1e} (scale {check['grad_scale']:.2e})")
    rows = [compare(replace(shapes, seconds=s), rounds, log) for s in (shapes.seconds, *longer)]
    model.train()
    throughput = []
    for batch in batches:
        b = make_batch(model, shapes, batch)
        fn = step_fn(model, b, config, loss_talkface)
        fn()
        seconds = statistics.median(time_call(fn) for _ in range(max(1, rounds - 1)))
        throughput.append({"batch": batch, "seconds": seconds, "clips_per_s": batch / seconds})
        log(f"  batch {batch}: {seconds:.2f} s per step, {batch / seconds:.2f} clips/s")
    return {"shapes": shapes, "frames": rows[0]["frames"], "rounds": rounds, "rows": rows, "check": check,
            "throughput": throughput, **{k: rows[0][k] for k in ("talkface", "recompute", "speedup", "encoder")}}


def render(result: dict[str, Any], load: str, threads: int = THREADS) -> str:
    shapes, check = result["shapes"], result["check"]
    lines = [
        SECTION, "",
        f"`python benchmarks/train_step.py`: one autoregressive training step on a {shapes.seconds:g} s clip "
        f"({result['frames']} frames at 30 fps), {shapes.label}, random weights: wav2vec 2.0 (CNN frozen) → "
        "decoding every frame → soft-DTW (γ 1e-3, squared Euclidean, no band) → backward → Adam step, float32, "
        f"train mode, {threads} threads. *Recompute* is FaceFormer's loop (`decode_recompute`: every step re-runs "
        "`nn.TransformerDecoderLayer` over the whole prefix and maps every position to V·3 offsets); *talkface* is "
        "`TalkFaceModel.forward` with the key/value-cached decoder. Same weights; medians of "
        f"{result['rounds']} interleaved rounds.",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {threads} threads; load "
        f"average at start {load} (other jobs share the CPUs).",
        "",
        "| clip (batch 1) | step | recompute (FaceFormer) | KV cache (talkface) | speed-up |",
        "|---|---|---:|---:|---:|",
    ]
    for row in result["rows"]:
        clip = f"{row['seconds']:g} s, {row['frames']} frames"
        lines += [
            f"| {clip} | whole step | {row['recompute']:.2f} s | {row['talkface']:.2f} s | "
            f"**{row['speedup']:.1f}×** |",
            f"| {clip} | without the encoder's {row['encoder']:.2f} s (decoder + loss + Adam) | "
            f"{row['recompute'] - row['encoder']:.2f} s | {row['talkface'] - row['encoder']:.2f} s | "
            f"{row['decoder_speedup']:.1f}× |",
        ]
    lines += [
        "",
        f"Gradients with dropout off: largest absolute difference over all parameters "
        f"{check['grad_max_abs_diff']:.1e} for a largest gradient of {check['grad_scale']:.1e}, i.e. "
        f"**{check['grad_rel_diff']:.1e} relative** (losses {check['loss_kv']:.6g} vs {check['loss_recompute']:.6g}).",
        "",
        "Throughput of a full talkface training step (equal-length clips, padded batch):",
        "",
        "| batch | s per step | clips/s |",
        "|---:|---:|---:|",
    ]
    for row in result["throughput"]:
        lines.append(f"| {row['batch']} | {row['seconds']:.2f} | {row['clips_per_s']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="*", default=[1, 8])
    parser.add_argument("--longer", type=float, nargs="*", default=[10.0],
                        help="also compare the two steps on clips of these lengths (s); recompute is O(T^2)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, seconds; writes nothing")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    # One thread in quick mode: it checks that the script runs, and tiny ops on 2 threads of a busy
    # machine spend their time waiting on each other.
    threads = 1 if args.quick else THREADS
    torch.set_num_threads(threads)
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    shapes = quick_shapes() if args.quick else full_shapes()
    longer = () if args.quick else tuple(args.longer)
    result = bench(shapes, args.rounds, args.batches, lambda msg: print(msg, file=sys.stderr), longer)
    text = render(result, load, threads)
    print(text)
    if not (args.no_write or args.quick):
        write_section(text)
    return result


if __name__ == "__main__":
    main()
