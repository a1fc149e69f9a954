"""Benchmark one autoregressive training step: talkface (CNN feature cache, KV-cached decoder) vs FaceFormer's
recompute loop, and an epoch on the demo corpus with and without the cache.

One step = wav2vec 2.0 encoder (CNN frozen) -> autoregressive decoding of every frame -> soft-DTW loss
(gamma 1e-3, squared Euclidean, no band) -> backward -> Adam step, on a 4 s clip (120 frames at 30 fps),
wav2vec2-base dimensions (random init, never downloaded), FLAME V 5023, D 64, vocaset preset, 2 CPU
threads, float32, train mode (dropout on) for the timings.

* *recompute*: FaceFormer's loop. The model's encoder with the CNN run every step (FaceFormer has no
  cache), then ``TalkFaceModel.decode_recompute`` (every step re-runs ``nn.TransformerDecoderLayer`` with
  this model's parameters over the whole prefix and maps every position to V*3 offsets).
* *talkface, no cache*: ``TalkFaceModel.forward`` (``decode``: one token per step, cached keys/values),
  the CNN run every step (talkface before issue 19).
* *talkface*: the same with the run's ``FeatureCache`` warm, as in every epoch after the first.

All three run on the same weights; with dropout off (eval) their gradients must agree: the report gives
the largest absolute gradient difference over all parameters divided by the largest absolute gradient,
for talkface (cache warm) against recompute, and for talkface with against without the cache. Rounds
are interleaved so load from other processes hits all alike; medians. Also: where the cached step's
time goes (CNN, projection + transformer, decoder, soft-DTW, Adam, each timed alone), clips/s of a
full talkface step at batch 1 and batch 8 (equal-length clips) with and without the cache, the
comparison again on a longer clip (``--longer``; the recompute loop's cost grows with the square of the
length), and the epoch time of ``talkface demo``'s recipe (``--demo-epochs``; its corpus, batch 8, CPU)
with and without the cache. ``--quick`` runs tiny shapes in seconds (the test suite runs it so the
script cannot rot) and writes nothing.

Writes the "## Training step" section of docs/benchmarks.md (other sections are kept).

    python benchmarks/train_step.py [--rounds 3] [--batches 1 8] [--longer 10] [--demo-epochs 4]
                                    [--no-write] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from _docs import cpu_name, write_section  # benchmarks/ is on sys.path when run as a script

from talkface.config import ModelConfig, TrainConfig
from talkface.model import FeatureCache, TalkFaceModel, tiny_encoder_config, wav2vec2_base_config
from talkface.presets import VOCASET_TRAIN, get_preset
from talkface.train import make_optimizer, sequence_loss

THREADS = 2
SECTION = "## Training step"
CACHE_BYTES = 2**30


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


@contextlib.contextmanager
def cache_set(model: TalkFaceModel, cache: FeatureCache | None) -> Iterator[None]:
    """Run with ``cache`` attached to the encoder (None: the CNN runs every call)."""
    before = model.audio_encoder.feature_cache
    model.audio_encoder.feature_cache = cache
    try:
        yield
    finally:
        model.audio_encoder.feature_cache = before


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


def compare_gradients(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    if a.keys() != b.keys():
        raise RuntimeError(f"different parameters got gradients: {sorted(a.keys() ^ b.keys())}")
    scale = max(float(g.abs().max()) for g in a.values())
    diff = max(float((a[n] - b[n]).abs().max()) for n in a)
    return {"grad_scale": scale, "grad_max_abs_diff": diff, "grad_rel_diff": diff / scale}


def gradient_check(model: TalkFaceModel, b: dict[str, torch.Tensor], config: TrainConfig) -> dict[str, Any]:
    """Dropout off: talkface with a warm cache against recompute, and against talkface without the cache."""
    model.eval()
    cache = FeatureCache(CACHE_BYTES)
    with cache_set(model, cache):
        loss_talkface(model, b, config)  # fills the cache
        kv_loss = loss_talkface(model, b, config)
        kv = gradients(model, kv_loss)
    if cache.stats.hits != b["audio"].shape[0]:
        raise RuntimeError(f"the warm cache answered {cache.stats.hits} of {b['audio'].shape[0]} clips")
    plain_loss = loss_talkface(model, b, config)
    plain = gradients(model, plain_loss)
    ref_loss = loss_recompute(model, b, config)
    ref = gradients(model, ref_loss)
    model.train()
    cached_vs_plain = compare_gradients(kv, plain)
    losses = {"loss_kv": float(kv_loss.detach()), "loss_recompute": float(ref_loss.detach()),
              "loss_plain": float(plain_loss.detach())}
    cached_vs_plain["loss_rel_diff"] = abs(losses["loss_kv"] - losses["loss_plain"]) / abs(losses["loss_plain"])
    return {**losses, **compare_gradients(kv, ref), "cache": cached_vs_plain}


def torch_adam(model: TalkFaceModel, lr: float) -> torch.optim.Optimizer:
    """torch's default Adam (a per-tensor loop on CPU), as FaceFormer and talkface before issue 19 made it."""
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)


def step_fn(model: TalkFaceModel, b: dict[str, torch.Tensor], config: TrainConfig,
            loss_fn: Callable[..., torch.Tensor], cache: FeatureCache | None = None,
            fused: bool = True) -> Callable[[], None]:
    """One training step; ``fused``: talkface's ``make_optimizer``, else torch's default Adam."""
    optimizer = make_optimizer(model, config.lr) if fused else torch_adam(model, config.lr)

    def step() -> None:
        with cache_set(model, cache):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model, b, config).backward()
            optimizer.step()

    return step


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]  # --clock cpu: CPU seconds of this process (all its threads), robust to other jobs


def time_call(fn: Callable[[], None]) -> float:
    start = clock()
    fn()
    return clock() - start


def compare(shapes: Shapes, rounds: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Interleaved rounds of the three batch-1 steps on one clip, plus the encoder's share."""
    config = TrainConfig(loss="softdtw", gamma=1e-3)
    model = build_model(shapes).train()
    one = make_batch(model, shapes, 1)
    cache = FeatureCache(CACHE_BYTES)
    runs = {"talkface": step_fn(model, one, config, loss_talkface, cache),
            "before": step_fn(model, one, config, loss_talkface, fused=False),
            "recompute": step_fn(model, one, config, loss_recompute, fused=False),
            "recompute_fused": step_fn(model, one, config, loss_recompute)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():
        fn()  # warm-up (allocator, numba soft-DTW kernels, the feature cache)
    for r in range(rounds):
        for name, fn in runs.items():
            times[name].append(time_call(fn))
        log(f"  {shapes.seconds:g} s, round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))

    def encoder_only(with_cache: FeatureCache | None) -> Callable[[], None]:
        def run() -> None:  # forward + backward; the rest of a step is decoder + loss + Adam
            with cache_set(model, with_cache):
                memory, _ = model.encode_audio(one["audio"], one["audio_lengths"], one["num_frames"])
                memory.sum().backward()
        return run

    enc_cached, enc_plain = encoder_only(cache), encoder_only(None)
    enc_cached(), enc_plain()
    encoder = {"cached": [], "plain": []}
    for _ in range(rounds):
        encoder["cached"].append(time_call(enc_cached))
        encoder["plain"].append(time_call(enc_plain))
    med = {name: statistics.median(v) for name, v in times.items()}
    enc = {name: statistics.median(v) for name, v in encoder.items()}
    return {"seconds": shapes.seconds, "frames": int(one["num_frames"][0]), **med,
            "speedup": med["recompute"] / med["talkface"], "speedup_fused": med["recompute_fused"] / med["talkface"],
            "speedup_before": med["recompute"] / med["before"], "encoder": enc["plain"],
            "encoder_cached": enc["cached"]}


def breakdown(model: TalkFaceModel, b: dict[str, torch.Tensor], config: TrainConfig, rounds: int) -> dict[str, float]:
    """Each part of a cached talkface step timed alone (median of ``rounds``), and the whole step.

    cnn: the frozen CNN's forward on every clip (what the cache saves); encoder: feature projection +
    SpecAugment + transformer + audio_feature_map, forward and backward (cache warm); decoder: style,
    autoregressive decoding and the vertex map, forward and backward (loss excluded); loss: soft-DTW
    forward and backward; adam: the optimizer step.
    """
    cache = FeatureCache(CACHE_BYTES)
    optimizer = make_optimizer(model, config.lr)
    default_adam = torch_adam(model, config.lr)
    enc = model.audio_encoder
    frames = int(b["num_frames"].max())
    clips = [b["audio"][i, : int(n)] for i, n in enumerate(b["audio_lengths"].tolist())]
    with cache_set(model, cache):
        memory, _ = model.encode_audio(b["audio"], b["audio_lengths"], b["num_frames"])  # fills the cache
    memory = memory.detach()
    pred = None

    def cnn() -> None:
        with torch.no_grad():
            for wav in clips:
                enc._compute_clip_cnn(wav)

    def encoder() -> None:
        with cache_set(model, cache):
            out, _ = model.encode_audio(b["audio"], b["audio_lengths"], b["num_frames"])
            out.backward(torch.ones_like(out))

    def decoder() -> None:
        nonlocal pred
        mem = memory.clone().requires_grad_(True)
        offsets = model.decode(mem, model.style_embedding(b["style"]), frames)
        vertices = b["template"][:, None] + offsets.view(offsets.shape[0], frames, -1, 3)
        pred = vertices.detach()
        vertices.backward(torch.ones_like(vertices))

    def loss() -> None:
        x = pred.clone().requires_grad_(True)
        sequence_loss(x, b["vertices"], b["num_frames"], config).backward()

    def adam() -> None:
        optimizer.step()

    def adam_default() -> None:
        default_adam.step()

    whole = step_fn(model, b, config, loss_talkface, cache)
    parts = {"cnn": cnn, "encoder": encoder, "decoder": decoder, "loss": loss, "adam": adam,
             "adam_default": adam_default, "step": whole}
    for fn in parts.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(rounds):
        for name, fn in parts.items():
            times[name].append(time_call(fn))
    model.zero_grad(set_to_none=True)
    return {name: statistics.median(v) for name, v in times.items()}


def demo_epochs(epochs: int, log: Callable[[str], None], num_speakers: int = 6, num_sentences: int = 8,
                use_espeak: bool | None = None) -> dict[str, Any]:
    """``talkface demo``'s corpus and training recipe (CPU), ``epochs`` epochs without, then with the cache."""
    from talkface.data import load_prepared, prepare_vocaset
    from talkface.demo import demo_train_config
    from talkface.synthetic import write_synthetic_vocaset
    from talkface.train import train

    with tempfile.TemporaryDirectory(prefix="talkface-bench-") as tmp:
        root = Path(tmp)
        report = write_synthetic_vocaset(root / "raw", num_speakers=num_speakers, num_sentences=num_sentences,
                                         use_espeak=use_espeak)
        prepare_vocaset(root / "raw", root / "data", splits=root / "raw" / "splits.toml")
        dataset = load_prepared(root / "data")
        out: dict[str, Any] = {"train_clips": len(dataset.split("train")), "val_clips": len(dataset.split("val")),
                               "espeak": bool(getattr(report, "used_espeak", False)), "epochs": epochs}
        for name, cache in (("before", {"feature_cache_mb": 0.0, "feature_cache_disk": False}), ("after", {})):
            config = demo_train_config(epochs, **cache)
            marks: dict[str, list[float]] = {"start": [], "validate": [], "epoch": []}

            def on_progress(event: dict[str, Any], marks: dict[str, list[float]] = marks) -> None:
                if event["event"] in marks:  # timed with the benchmark's clock (wall or CPU)
                    marks[event["event"]].append(clock())

            result = train(root / "data", root / name, config, device="cpu", on_progress=on_progress)
            ends = [*marks["start"], *marks["epoch"]]
            out[name] = {"epoch_s": [b - a for a, b in zip(ends[:-1], ends[1:], strict=True)],
                         "train_s": [v - a for a, v in zip(ends[:-1], marks["validate"], strict=True)],
                         "train_loss": [h["train_loss"] for h in result.history]}
            log(f"  demo {name}: epochs {', '.join(f'{s:.2f}' for s in out[name]['epoch_s'])} s")
    return out


def bench(shapes: Shapes, rounds: int, batches: list[int], log: Callable[[str], None],
          longer: tuple[float, ...] = (), demo: int = 0) -> dict[str, Any]:
    config = TrainConfig(loss="softdtw", gamma=1e-3)
    model = build_model(shapes)
    check = gradient_check(model, make_batch(model, shapes, 1), config)
    log(f"  gradients vs recompute: rel diff {check['grad_rel_diff']:.1e} (scale {check['grad_scale']:.2e}); "
        f"cached vs not: {check['cache']['grad_rel_diff']:.1e}")
    rows = [compare(replace(shapes, seconds=s), rounds, log) for s in (shapes.seconds, *longer)]
    model.train()
    throughput, parts = [], {}
    for batch in batches:
        b = make_batch(model, shapes, batch)
        cache = FeatureCache(CACHE_BYTES)
        fns = {"after": step_fn(model, b, config, loss_talkface, cache),
               "before": step_fn(model, b, config, loss_talkface, fused=False)}
        times: dict[str, list[float]] = {name: [] for name in fns}
        for fn in fns.values():
            fn()
        for _ in range(max(1, rounds - 1)):
            for name, fn in fns.items():
                times[name].append(time_call(fn))
        row = {"batch": batch, **{f"{name}_s": statistics.median(v) for name, v in times.items()}}
        row.update(clips_per_s=batch / row["after_s"], clips_per_s_before=batch / row["before_s"])
        throughput.append(row)
        log(f"  batch {batch}: {row['after_s']:.2f} s per step ({row['clips_per_s']:.2f} clips/s), no cache "
            f"{row['before_s']:.2f} s ({row['clips_per_s_before']:.2f} clips/s)")
        parts[batch] = breakdown(model, b, config, max(1, rounds - 1))
        log(f"  batch {batch} parts: " + ", ".join(f"{k} {v:.3f} s" for k, v in parts[batch].items()))
    demo_result = demo_epochs(demo, log) if demo else None
    return {"shapes": shapes, "frames": rows[0]["frames"], "rounds": rounds, "rows": rows, "check": check,
            "throughput": throughput, "parts": parts, "demo": demo_result,
            **{k: rows[0][k] for k in ("talkface", "before", "recompute", "recompute_fused", "speedup",
                                       "speedup_fused", "encoder")}}


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f} %"


def render_demo(demo: dict[str, Any]) -> str:
    """The demo-epoch table of ``demo_epochs``'s result."""
    def med(v: list[float]) -> float:
        return statistics.median(v[1:] if len(v) > 1 else v)

    b, a = demo["before"], demo["after"]
    lines = [
        f"Epoch time on `talkface demo`'s corpus and recipe ({demo['train_clips']} train / {demo['val_clips']} "
        f"val clips, {'espeak-ng' if demo['espeak'] else 'formant'} speech, 64-channel random CNN, batch 8, "
        f"CPU), {demo['epochs']} epochs each, first without then with the cache; medians of epochs 2–"
        f"{demo['epochs']} (epoch 1 of the cached run fills it):",
        "",
        "| | train part | whole epoch (with validation) | epoch 1 |",
        "|---|---:|---:|---:|",
        f"| no cache | {med(b['train_s']):.2f} s | {med(b['epoch_s']):.2f} s | {b['epoch_s'][0]:.2f} s |",
        f"| cache | {med(a['train_s']):.2f} s | {med(a['epoch_s']):.2f} s | {a['epoch_s'][0]:.2f} s |",
        f"| gain | {med(b['train_s']) / med(a['train_s']):.2f}× | {med(b['epoch_s']) / med(a['epoch_s']):.2f}× | |",
        "",
        f"Training losses per epoch, no cache: {', '.join(f'{x:.6g}' for x in b['train_loss'])}; cache: "
        f"{', '.join(f'{x:.6g}' for x in a['train_loss'])}.",
    ]
    return "\n".join(lines) + "\n"


def render(result: dict[str, Any], load: str, threads: int = THREADS, load_end: str = "") -> str:
    shapes, check = result["shapes"], result["check"]
    lines = [
        SECTION, "",
        f"`python benchmarks/train_step.py`: one autoregressive training step on a {shapes.seconds:g} s clip "
        f"({result['frames']} frames at 30 fps), {shapes.label}, random weights: wav2vec 2.0 (CNN frozen) → "
        "decoding every frame → soft-DTW (γ 1e-3, squared Euclidean, no band) → backward → Adam step, float32, "
        f"train mode, {threads} threads. *Recompute* is FaceFormer's training step: the CNN every step, then "
        "`decode_recompute` (every step re-runs `nn.TransformerDecoderLayer` over the whole prefix and maps every "
        "position to V·3 offsets), then torch's default Adam (FaceFormer's optimizer; a per-tensor loop on CPU); "
        "*recompute, fused Adam* is the same with talkface's optimizer. *talkface before* is `TalkFaceModel.forward` "
        "(key/value-cached decoder) with the CNN every step and torch's default Adam, as before issue 19; "
        "*talkface* is the same with the run's CNN feature cache warm (every epoch after the first) and fused "
        "Adam. Same weights; medians of "
        f"{result['rounds']} interleaved rounds"
        + (", timed in CPU seconds of the process (`--clock cpu`), not elapsed time." if result.get("clock") == "cpu"
           else "."),
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {threads} threads; load "
        f"average at start {load}{f', at the end {load_end}' if load_end else ''} (other jobs share the CPUs).",
        "",
        "| clip (batch 1) | step | recompute (FaceFormer) | recompute, fused Adam | talkface before | talkface "
        "| talkface vs recompute | vs recompute, fused Adam |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        clip = f"{row['seconds']:g} s, {row['frames']} frames"
        lines += [
            f"| {clip} | whole step | {row['recompute']:.2f} s | {row['recompute_fused']:.2f} s | "
            f"{row['before']:.2f} s | {row['talkface']:.2f} s | **{row['speedup']:.2f}×** "
            f"(before: {row['speedup_before']:.2f}×) | **{row['speedup_fused']:.2f}×** |",
            f"| {clip} | encoder fwd+bwd alone | {row['encoder']:.2f} s | {row['encoder']:.2f} s | "
            f"{row['encoder']:.2f} s | {row['encoder_cached']:.2f} s | | |",
        ]
    cache = check["cache"]
    lines += [
        "",
        f"Gradients with dropout off, talkface (cache warm) against recompute: largest absolute difference over all "
        f"parameters {check['grad_max_abs_diff']:.1e} for a largest gradient of {check['grad_scale']:.1e}, i.e. "
        f"**{check['grad_rel_diff']:.1e} relative** (losses {check['loss_kv']:.6g} vs {check['loss_recompute']:.6g}). "
        f"With against without the cache: gradients {cache['grad_rel_diff']:.1e} relative, losses "
        f"{cache['loss_rel_diff']:.1e} relative.",
        "",
        "Throughput of a full talkface training step (equal-length clips, padded batch), interleaved; *before*: "
        "no cache and torch's default Adam, *talkface*: cache warm and fused Adam:",
        "",
        "| batch | before: s per step | clips/s | talkface: s per step | clips/s | gain |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["throughput"]:
        lines.append(f"| {row['batch']} | {row['before_s']:.2f} | {row['clips_per_s_before']:.2f} | "
                     f"{row['after_s']:.2f} | {row['clips_per_s']:.2f} | {row['before_s'] / row['after_s']:.2f}× |")
    if result["parts"]:
        names = {"cnn": "CNN forward (what the cache saves)", "encoder": "projection + transformer, fwd+bwd",
                 "decoder": "decoder + vertex map, fwd+bwd", "loss": "soft-DTW, fwd+bwd", "adam": "Adam step (fused)",
                 "adam_default": "Adam step, torch's default loop (before)"}
        batches = list(result["parts"])
        lines += ["", "Where a cached step's time goes, each part timed alone (medians):", "",
                  "| part | " + " | ".join(f"batch {b}" for b in batches) + " |",
                  "|---|" + "---:|" * len(batches)]
        for key, label in names.items():
            cells = []
            for b in batches:
                p = result["parts"][b]
                share = "" if key in ("cnn", "adam_default") else f" ({_pct(p[key], p['step'])})"
                cells.append(f"{p[key]:.3f} s{share}")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("| whole cached step | " + " | ".join(f"{result['parts'][b]['step']:.3f} s" for b in batches)
                     + " |")
    if result.get("demo"):
        lines += ["", render_demo(result["demo"]).rstrip("\n")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="*", default=[1, 8])
    parser.add_argument("--longer", type=float, nargs="*", default=[10.0],
                        help="also compare the steps on clips of these lengths (s); recompute is O(T^2)")
    parser.add_argument("--demo-epochs", type=int, default=4,
                        help="epochs of the demo recipe without and with the cache (0: skip)")
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: elapsed time; cpu: this process's CPU time (on a machine shared with other "
                             "jobs, with --threads 1, close to the elapsed time the same work takes alone)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, seconds; writes nothing")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    global clock
    clock = CLOCKS[args.clock]
    # One thread in quick mode: it checks that the script runs, and tiny ops on 2 threads of a busy
    # machine spend their time waiting on each other.
    threads = 1 if args.quick else args.threads
    torch.set_num_threads(threads)
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    shapes = quick_shapes() if args.quick else full_shapes()
    longer = () if args.quick else tuple(args.longer)
    demo = 0 if args.quick else args.demo_epochs
    result = bench(shapes, args.rounds, args.batches, lambda msg: print(msg, file=sys.stderr), longer, demo)
    result["clock"] = args.clock
    text = render(result, load, threads, load_end=" / ".join(f"{v:.1f}" for v in os.getloadavg()))
    print(text)
    if not (args.no_write or args.quick):
        write_section(text)
    return result


if __name__ == "__main__":
    main()
