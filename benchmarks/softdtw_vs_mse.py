"""Does Soft-DTW beat MSE? A controlled, reproducible experiment (issues #11, #17), written to docs/results.md
and docs/results.json.

Three synthetic corpora that differ only in how the motion is timed against the audio:

- ``a-none``: no timing noise (the control);
- ``b-speaker``: per-speaker lead/lag (±100 ms) and tempo (0.85-1.15): a speaker's style predicts it;
- ``c-clip``: per-clip audio-motion offset (±80 ms) and a slow within-clip time warp (±40 ms) that
  neither the audio nor the speaker predicts (capture-sync jitter: the situation the paper argues about).

The same speech (espeak-ng), heads and sentences in all three. Each loss variant trains the same small
model over ≥ 5 seeds on each corpus: talkface's FaceFormer decoder (``TalkFaceModel.decode``, trained
autoregressively as FaceFormer trains) on the frozen, shipped ``synthetic-phonetic`` wav2vec 2.0 encoder,
whose features are computed once per clip (the encoder is frozen, so a cache changes nothing but the
time). Evaluation on the test split (held-out sentences of the training speakers; unseen speakers under
every training style, averaged), with per-seed paired differences against ``mse``.

    python benchmarks/softdtw_vs_mse.py [--out docs] [--seeds 0 1 2 3 4] [--epochs N] [--work DIR] [--tiny]
        [--corpora a-none b-speaker c-clip] [--variants mse softdtw ...] [--jobs 2]

``--work DIR`` keeps the corpora and runs (a rerun reuses finished runs); default: a temporary folder.
``--tiny`` is the seconds-long end-to-end setting of the test suite (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable as a plain script from a checkout
    sys.path.insert(0, str(REPO))

BAND = 3  # frames (100 ms at 30 fps): the banded variant's Sakoe-Chiba half-width
VARIANTS: dict[str, dict[str, Any]] = {
    "mse": {"loss": "mse"},
    "softdtw": {"loss": "softdtw"},  # the paper's loss: squared-Euclidean cost, no band
    "softdtw-euclid": {"loss": "softdtw", "cost": "euclidean"},  # the paper's formula 3: ||x_i - y_j||
    "softdtw+mse": {"loss": "softdtw+mse"},  # mse_weight = mean T x V*3: both terms are sums over the clip
    f"softdtw-band{BAND}": {"loss": "softdtw", "band": BAND},
}
CORPORA: dict[str, dict[str, Any]] = {
    "a-none": {"max_lag_s": 0.0, "tempo_range": (1.0, 1.0)},
    "b-speaker": {"max_lag_s": 0.1, "tempo_range": (0.85, 1.15)},
    "c-clip": {"max_lag_s": 0.0, "tempo_range": (1.0, 1.0), "clip_offset_s": 0.08, "clip_warp_s": 0.04},
}
CORPUS_TEXT = {
    "a-none": "no timing noise (control): motion exactly on the audio",
    "b-speaker": "per-speaker lead/lag spread over ±100 ms and tempo 0.85–1.15 (a speaker's style predicts it)",
    "c-clip": "per-clip offset uniform in ±80 ms plus a slow sinusoidal warp of up to ±40 ms (period 1–2 s), "
              "drawn per clip: neither audio nor speaker predicts it",
}
SHIFT_S = 0.2  # largest constant shift / DTW band (seconds): talkface.evaluate.metrics.MAX_SHIFT_S
METRICS = (  # (key, header, scale, digits, lower is better)
    ("lve", "LVE ×1e-5 m²", 1e5, 3, True),
    ("lve_shift", "LVE best shift ×1e-5", 1e5, 3, True),
    ("lve_dtw", "LVE after DTW ×1e-5", 1e5, 3, True),
    ("corr", "lip corr", 1.0, 3, False),
    ("range_ratio", "opening range pred/GT", 1.0, 3, None),
    ("fdd", "FDD ×1e-7 m²", 1e7, 3, None),
)


@dataclass(frozen=True)
class Setup:
    """Everything that defines one experiment (written into the report)."""

    num_speakers: int = 6
    num_train_speakers: int = 4
    num_sentences: int = 16
    train_sentences: tuple[int, int] = (1, 12)
    val_sentences: tuple[int, int] = (13, 13)
    test_sentences: tuple[int, int] = (14, 16)
    corpus_seed: int = 0
    fps: float = 30.0
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 8
    gamma: float = 1e-3
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    variants: tuple[str, ...] = tuple(VARIANTS)
    corpora: tuple[str, ...] = tuple(CORPORA)
    encoder: str = "synthetic-phonetic"
    use_espeak: bool | None = None  # None: espeak-ng when installed; False: the formant synthesiser
    model_overrides: dict[str, Any] = field(default_factory=lambda: {"feature_dim": 64})
    device: str = "cpu"
    finetune: bool = False  # True: talkface's trainer fine-tunes the encoder's transformer (CNN frozen), as FaceFormer


def tiny_setup() -> Setup:
    """Seconds-long end-to-end setting for the test: 2 speakers, 3 sentences, 15 fps, 1 epoch, 2 seeds."""
    return Setup(num_speakers=2, num_train_speakers=1, num_sentences=3, train_sentences=(1, 1),
                 val_sentences=(2, 2), test_sentences=(3, 3), fps=15.0, epochs=1, batch_size=1, seeds=(0, 1),
                 use_espeak=False, model_overrides={"feature_dim": 16})


# ------------------------------------------------------------------------------------- corpus


_CORPUS_KEYS = ("num_speakers", "num_train_speakers", "num_sentences", "train_sentences", "val_sentences",
                "test_sentences", "corpus_seed", "fps", "use_espeak")


def build_corpus(setup: Setup, corpus: str, work: Path) -> Path:
    """Synthesise one corpus variant and prepare it; returns the prepared folder (reused if there)."""
    from talkface.data import load_prepared, prepare_vocaset
    from talkface.errors import DatasetError
    from talkface.io.fileio import write_text_atomic
    from talkface.synthetic import write_synthetic_vocaset
    from talkface.synthetic.corpus import splits_toml

    root = work / corpus
    data, stamp = root / "data", root / "corpus.json"
    key = json.dumps({"corpus": CORPORA[corpus], **{k: v for k, v in asdict(setup).items() if k in _CORPUS_KEYS}},
                     sort_keys=True, default=list)
    if stamp.is_file() and stamp.read_text() == key:
        try:
            load_prepared(data)
            return data
        except DatasetError:
            pass
    report = write_synthetic_vocaset(root / "raw", num_speakers=setup.num_speakers,
                                     num_sentences=setup.num_sentences, seed=setup.corpus_seed,
                                     use_espeak=setup.use_espeak, **CORPORA[corpus])
    names = list(report.speakers)
    train = names[:setup.num_train_speakers]
    spec = {"train": {"speakers": train, "sentences": list(setup.train_sentences)},
            "val": {"speakers": train, "sentences": list(setup.val_sentences)},
            "test": {"speakers": names, "sentences": list(setup.test_sentences)}}
    write_text_atomic(root / "splits.toml", splits_toml(spec))
    prepare_vocaset(root / "raw", data, fps=setup.fps, splits=root / "splits.toml", overwrite=True)
    write_text_atomic(stamp, key)
    return data


# ------------------------------------------------------------------------------------- statistics (pure)
# The lip-sync metrics (best-shift LVE, DTW lip error, lip opening, correlation, opening range) are
# talkface's own, in talkface.evaluate.metrics, shared with `talkface evaluate` (issue #27).


def t_quantile(p: float, df: int) -> float:
    """Student t quantile (scipy when installed, else a Cornish-Fisher expansion good to ~1e-3 for df >= 3)."""
    try:
        from scipy import stats

        return float(stats.t.ppf(p, df))
    except ImportError:  # pragma: no cover - scipy ships with the dev environment
        from statistics import NormalDist

        z = NormalDist().inv_cdf(p)
        g1 = (z ** 3 + z) / 4
        g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96
        g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384
        return z + g1 / df + g2 / df ** 2 + g3 / df ** 3


def mean_ci(values: list[float] | np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and its two-sided t confidence interval; (mean, nan, nan) for fewer than two finite values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(v.mean())
    if v.size < 2:
        return mean, float("nan"), float("nan")
    half = t_quantile(0.5 + level / 2, v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return mean, mean - half, mean + half


def verdict(low: float, high: float, lower_is_better: bool) -> str:
    """"better" / "worse" / "no detectable difference" from the CI of (variant − mse)."""
    if not (np.isfinite(low) and np.isfinite(high)) or low <= 0.0 <= high:
        return "no detectable difference"
    improved = high < 0.0 if lower_is_better else low > 0.0
    return "better" if improved else "worse"


# ------------------------------------------------------------------------------------- training


def encode_clips(model: Any, clips: list[Any]) -> list[Any]:
    """The frozen encoder's (T, H) hidden states of each clip, in eval mode (no SpecAugment, no dropout)."""
    import torch

    encoder = model.audio_encoder.eval()
    out = []
    with torch.no_grad():
        for clip in clips:
            audio = torch.as_tensor(clip.audio)[None]
            hidden, _ = encoder(audio, torch.tensor([audio.shape[1]]), torch.tensor([clip.vertices.shape[0]]))
            out.append(hidden[0])
    return out


@dataclass
class Prepared:
    """One corpus loaded for training: clips, their cached encoder features, and the model numbers."""

    data: Path
    meta: dict[str, Any]
    regions: dict[str, np.ndarray]
    train: list[Any]
    test: list[Any]
    train_feats: list[Any]
    test_feats: list[Any]
    model_config: Any
    encoder_config: dict[str, Any]
    encoder_state: dict[str, Any]
    mse_weight: float


def prepare_corpus(setup: Setup, data: Path) -> Prepared:
    """Load a prepared corpus and compute the frozen encoder's features for its train and test clips
    (not with ``setup.finetune``: each run's own fine-tuned encoder computes them, see ``run_one``)."""
    from talkface.data import load_prepared
    from talkface.model import TalkFaceModel, load_pretrained_encoder_config
    from talkface.train import build_model_config

    dataset = load_prepared(data)
    model_config = build_model_config(dataset.meta, preset=None, overrides=setup.model_overrides)
    encoder_config = load_pretrained_encoder_config(setup.encoder)
    model = TalkFaceModel(model_config, encoder_config)
    model.load_pretrained_encoder(setup.encoder)
    train = [dataset.load_clip(i) for i in dataset.split("train")]
    test = [dataset.load_clip(i) for i in dataset.split("test")]
    mse_weight = float(np.mean([c.vertices.shape[0] for c in train])) * int(dataset.meta["num_vertices"]) * 3
    frozen = not setup.finetune
    return Prepared(data, dataset.meta, dataset.regions, train, test, encode_clips(model, train) if frozen else [],
                    encode_clips(model, test) if frozen else [], model_config, encoder_config,
                    {k: v.clone() for k, v in model.audio_encoder.state_dict().items()}, mse_weight)


def train_config(setup: Setup, variant: str, seed: int, mse_weight: float) -> Any:
    from talkface.config import TrainConfig

    return TrainConfig(gamma=setup.gamma, epochs=setup.epochs, lr=setup.lr, batch_size=setup.batch_size, seed=seed,
                       encoder=setup.encoder, mse_weight=mse_weight, **VARIANTS[variant])


def _batch(prep: Prepared, idx: list[int], clips: list[Any], feats: list[Any]) -> tuple[Any, ...]:
    import torch

    from talkface.data.collate import style_vector

    speakers = list(prep.model_config.speakers)
    lengths = torch.tensor([clips[i].vertices.shape[0] for i in idx])
    total = int(lengths.max())
    hidden = torch.zeros(len(idx), total, feats[idx[0]].shape[1])
    gt = torch.zeros(len(idx), total, *clips[idx[0]].vertices.shape[1:])
    for row, i in enumerate(idx):
        hidden[row, :lengths[row]] = feats[i]
        gt[row, :lengths[row]] = torch.as_tensor(clips[i].vertices)
    template = torch.stack([torch.as_tensor(clips[i].template) for i in idx])
    style = torch.as_tensor(np.stack([style_vector(clips[i].speaker, speakers) for i in idx]))
    return hidden, gt, template, style, lengths


def train_cached(prep: Prepared, config: Any) -> tuple[Any, list[dict[str, float]]]:
    """FaceFormer's autoregressive training of the decoder on cached features of the frozen encoder.

    The step is ``TalkFaceModel.forward`` with ``audio_encoder(...)`` replaced by its cached output:
    feature map -> style -> ``decode`` (autoregressive, gradients through fed-back frames) -> template +
    offsets, and the loss is the trainer's ``sequence_loss``. Adam on the trainable (non-encoder) weights.

    Returns:
        (the trained ``TalkFaceModel`` in eval mode, per-epoch ``{"epoch", "train_loss"}``).
    """
    import random

    import torch

    from talkface.model import TalkFaceModel
    from talkface.train import seed_everything, sequence_loss

    seed_everything(config.seed)
    model = TalkFaceModel(prep.model_config, prep.encoder_config)
    model.audio_encoder.load_state_dict(prep.encoder_state)
    model.audio_encoder.requires_grad_(False)
    model.train()
    model.audio_encoder.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    rng = random.Random(config.seed)
    order = list(range(len(prep.train)))
    history = []
    for epoch in range(1, config.epochs + 1):
        rng.shuffle(order)
        losses = []
        for start in range(0, len(order), config.batch_size):
            idx = order[start:start + config.batch_size]
            hidden, gt, template, style, lengths = _batch(prep, idx, prep.train, prep.train_feats)
            memory = model.audio_feature_map(hidden)
            offsets = model.decode(memory, model.style_embedding(style), int(lengths.max()))
            pred = template[:, None] + offsets.view(len(idx), int(lengths.max()), -1, 3)
            loss = sequence_loss(pred, gt, lengths, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses))})
    model.eval()
    return model, history


def train_finetuned(setup: Setup, prep: Prepared, config: Any, run_dir: Path) -> tuple[Any, list[dict[str, float]]]:
    """FaceFormer's recipe with talkface's trainer: the encoder's transformer fine-tuned with the decoder (its
    CNN frozen), from the shipped weights; the run's last weights, in eval mode, and per-epoch train losses."""
    from talkface.model.checkpoint import load_checkpoint
    from talkface.train import train

    result = train(prep.data, run_dir, config, model_overrides=setup.model_overrides, device=setup.device,
                   overwrite=True)
    model, _ = load_checkpoint(result.last_path or run_dir / "last.safetensors")
    history = [{"epoch": e["epoch"], "train_loss": e["train_loss"]} for e in result.history]
    return model.eval(), history


def predict(model: Any, prep: Prepared, i: int, style: np.ndarray) -> np.ndarray:
    """(T, V, 3) float32 vertices of test clip ``i`` under a style, generated autoregressively."""
    import torch

    clip, feats = prep.test[i], prep.test_feats[i]
    with torch.no_grad():
        memory = model.audio_feature_map(feats[None])
        offsets = model.decode(memory, model.style_embedding(torch.as_tensor(style)[None]), feats.shape[0])
    return (clip.template[None] + offsets.view(feats.shape[0], -1, 3).numpy()).astype(np.float32)


def evaluate(model: Any, prep: Prepared) -> dict[str, Any]:
    """Every test clip (unseen speakers under each training style) scored; means over predictions per group.

    Returns:
        ``{"groups": {"seen"|"unseen"|"all": {metric: value, "clips": n}}, "clips": {name: openings}}``.
        LVE (m²) pools frames as ``talkface evaluate`` does; the others are means over predictions.
    """
    from talkface.evaluate import metrics
    from talkface.evaluate.regions import lip_opening_regions
    from talkface.inference import evaluation_styles

    lips = np.asarray(prep.regions["lips"])
    upper = np.unique(np.concatenate([prep.regions[k] for k in ("forehead", "eye_region") if k in prep.regions]
                                     or [[]])).astype(np.int64)
    max_shift = metrics.max_shift_frames(float(prep.meta["fps"]), SHIFT_S)
    speakers = list(model.config.speakers)
    rows: list[dict[str, Any]] = []
    openings: dict[str, Any] = {}
    for i, clip in enumerate(prep.test):
        top, bottom, _ = lip_opening_regions(prep.regions, clip.template)
        for k, style in enumerate(evaluation_styles(clip.speaker, speakers)):
            p, g = (t.numpy() for t in metrics.align_lengths(predict(model, prep, i, style.weights), clip.vertices))
            po, go = metrics.lip_opening(p, top, bottom).numpy(), metrics.lip_opening(g, top, bottom).numpy()
            rows.append({
                "seen": clip.speaker in speakers, "lip_frames": metrics.lip_max_errors(p, g, lips).numpy(),
                "lve_shift": metrics.best_shift_lve(p, g, lips, max_shift)[1],
                "lve_dtw": metrics.dtw_lip_error(p, g, lips, max_shift), "frames": len(g),
                "corr": metrics.pearson(po, go), "range_ratio": metrics.opening_range(po, go),
                "fdd": float(metrics.fdd(p, g, clip.template, upper)) if upper.size else float("nan"),
            })
            if k == 0:
                openings[clip.name] = {"speaker": clip.speaker, "seen": rows[-1]["seen"], "pred": po.tolist(),
                                       "gt": go.tolist()}
    groups = {"seen": [r for r in rows if r["seen"]], "unseen": [r for r in rows if not r["seen"]], "all": rows}
    return {"groups": {name: _aggregate(g) for name, g in groups.items()}, "clips": openings}


def _aggregate(rows: list[dict[str, Any]]) -> dict[str, float]:
    if not rows:
        return {"clips": 0, **{m[0]: float("nan") for m in METRICS}}
    frames = np.array([r["frames"] for r in rows], dtype=np.float64)
    out: dict[str, float] = {"clips": len(rows), "lve": float(np.concatenate([r["lip_frames"] for r in rows]).mean())}
    for key in ("lve_shift", "lve_dtw"):
        out[key] = float(np.average([r[key] for r in rows], weights=frames))  # frame-pooled like LVE
    for key in ("corr", "range_ratio", "fdd"):
        values = np.array([r[key] for r in rows], dtype=np.float64)
        out[key] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return out


def run_one(setup: Setup, prep: Prepared, corpus: str, variant: str, seed: int, run_dir: Path) -> dict[str, Any]:
    """Train and evaluate one (corpus, variant, seed), or reuse its finished record."""
    from talkface.config import to_dict
    from talkface.io.fileio import write_text_atomic

    config = train_config(setup, variant, seed, prep.mse_weight)
    done = run_dir / "record.json"
    key = json.dumps({k: v for k, v in asdict(setup).items() if k not in ("seeds", "variants", "corpora")},
                     sort_keys=True, default=list)
    if done.is_file():
        old = json.loads(done.read_text())
        if old.get("config") == to_dict(config) and old.get("setup") == key:
            return {**old, "reused": True}
    t0, c0 = time.perf_counter(), time.process_time()
    if setup.finetune:
        model, history = train_finetuned(setup, prep, config, run_dir / "run")
        scored = replace(prep, test_feats=encode_clips(model, prep.test))  # the fine-tuned encoder's features
    else:
        model, history = train_cached(prep, config)
        scored = prep
    train_s = time.perf_counter() - t0
    record = {"corpus": corpus, "variant": variant, "seed": seed, "config": to_dict(config), "setup": key,
              "history": history, "train_s": train_s, **evaluate(model, scored)}
    record["run_s"], record["cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(done, json.dumps(record, indent=1, allow_nan=True))
    return record


_PREPARED: dict[str, Prepared] = {}  # per process: each corpus' clips and encoder features, computed once


def _run_job(setup: Setup, data: Path, corpus: str, variant: str, seed: int, run_dir: Path,
             threads: int) -> dict[str, Any]:
    """One run, in this process or a worker (which encodes each corpus once, on its first run of it)."""
    import torch

    torch.set_num_threads(threads)
    if corpus not in _PREPARED:
        _PREPARED[corpus] = prepare_corpus(setup, data)
    record = run_one(setup, _PREPARED[corpus], corpus, variant, seed, run_dir)
    print(f"  {corpus} {variant} seed {seed}: {record['run_s']:.0f} s ({record['cpu_s']:.0f} CPU-s), LVE "
          f"{record['groups']['all']['lve'] * 1e5:.3f}e-5, corr {record['groups']['all']['corr']:.3f}"
          f"{' (reused)' if record.get('reused') else ''}", flush=True)
    return record


def run_order(setup: Setup) -> list[tuple[str, str, int]]:
    """(corpus, variant, seed) in the order they run: mse and softdtw on every corpus first (c, a, b), then
    the other losses, all seeds of a cell together, so that a run stopped early leaves whole cells."""
    priority = [c for c in ("c-clip", "a-none", "b-speaker") if c in setup.corpora]
    priority += [c for c in setup.corpora if c not in priority]
    first = [v for v in ("mse", "softdtw") if v in setup.variants]
    rest = [v for v in setup.variants if v not in first]
    cells = [(c, v) for c in priority for v in first] + [(c, v) for c in priority for v in rest]
    return [(c, v, s) for c, v in cells for s in setup.seeds]


def finished_records(setup: Setup, work: Path) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The finished runs in ``work`` for this setup, by corpus and variant, keeping only whole cells (every seed)."""
    key = json.dumps({k: v for k, v in asdict(setup).items() if k not in ("seeds", "variants", "corpora")},
                     sort_keys=True, default=list)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for corpus in setup.corpora:
        for variant in setup.variants:
            records = []
            for seed in setup.seeds:
                path = work / corpus / "runs" / f"{variant}_s{seed}" / "record.json"
                record = json.loads(path.read_text()) if path.is_file() else None
                if record is None or record.get("setup") != key:
                    break
                records.append({**record, "reused": True})
            if len(records) == len(setup.seeds):
                runs.setdefault(corpus, {})[variant] = records
    return runs


def run_experiment(setup: Setup, work: Path, log: Any = print, *, jobs: int = 1, threads: int = 1,
                   finished_only: bool = False) -> dict[str, Any]:
    """Every corpus x variant x seed (or, with ``finished_only``, the whole cells already in ``work``)."""
    t_start = time.perf_counter()
    if finished_only:
        runs = finished_records(setup, work)
        if not any("mse" in by_v for by_v in runs.values()):
            from talkface.errors import ConfigError

            raise ConfigError(f"{work}: no finished mse cell for this setup; run the experiment first")
        return {"runs": runs, "styles": {c: _speaker_styles(work / c / "raw") for c in runs},
                "wall_s": time.perf_counter() - t_start, "fps": setup.fps}
    datas = {c: build_corpus(setup, c, work) for c in setup.corpora}
    log(f"corpora ready in {time.perf_counter() - t_start:.0f} s")
    order = run_order(setup)
    paths = {key: work / key[0] / "runs" / f"{key[1]}_s{key[2]}" for key in order}
    if jobs <= 1:
        done = [_run_job(setup, datas[c], c, v, s, paths[(c, v, s)], threads) for c, v, s in order]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_run_job, setup, datas[c], c, v, s, paths[(c, v, s)], threads)
                       for c, v, s in order]
            done = [f.result() for f in futures]
    records = {(r["corpus"], r["variant"], r["seed"]): r for r in done}
    runs = {c: {v: [records[(c, v, s)] for s in setup.seeds] for v in setup.variants} for c in setup.corpora}
    styles = {c: _speaker_styles(work / c / "raw") for c in setup.corpora}
    return {"runs": runs, "styles": styles, "wall_s": time.perf_counter() - t_start,
            "fps": setup.fps, "mse_weight": {c: runs[c][setup.variants[0]][0]["config"]["mse_weight"]
                                            for c in setup.corpora}}


def _speaker_styles(raw_dir: Path) -> dict[str, dict[str, float]]:
    path = raw_dir / "synthetic.json"
    if not path.is_file():
        return {}
    return {s["name"]: s["style"] for s in json.loads(path.read_text())["speakers"]}


# ------------------------------------------------------------------------------------- summary


def summarize(setup: Setup, runs: dict[str, dict[str, list[dict[str, Any]]]], group: str = "all") -> dict[str, Any]:
    """Per (corpus, variant): seeds, per-metric mean/CI/per-seed values, and paired differences against mse."""
    out: dict[str, Any] = {}
    for corpus, by_variant in runs.items():
        out[corpus] = {}
        base = by_variant.get("mse")
        for variant, records in by_variant.items():
            entry: dict[str, Any] = {"seeds": [r["seed"] for r in records], "metrics": {}}
            for key, _, _, _, lower in METRICS:
                values = [float(r["groups"][group][key]) for r in records]
                mean, low, high = mean_ci(values)
                metric: dict[str, Any] = {"mean": mean, "ci_low": low, "ci_high": high, "per_seed": values}
                if base is not None and variant != "mse":
                    by_seed = {r["seed"]: float(r["groups"][group][key]) for r in base}
                    diffs = [v - by_seed[r["seed"]] for v, r in zip(values, records, strict=True)
                             if r["seed"] in by_seed]
                    d_mean, d_low, d_high = mean_ci(diffs)
                    metric["diff_vs_mse"] = {"mean": d_mean, "ci_low": d_low, "ci_high": d_high, "per_seed": diffs}
                    if lower is not None:
                        metric["diff_vs_mse"]["verdict"] = verdict(d_low, d_high, lower)
                entry["metrics"][key] = metric
            out[corpus][variant] = entry
    return out


def _fmt(value: float, scale: float, digits: int) -> str:
    return "—" if not np.isfinite(value) else f"{value * scale:.{digits}f}"


def results_table(summary: dict[str, Any], corpus: str) -> str:
    head = "| loss | seeds | " + " | ".join(m[1] for m in METRICS) + " |"
    lines = [head, "|" + "---|" * (len(METRICS) + 2)]
    for variant, entry in summary[corpus].items():
        cells = []
        for key, _, scale, digits, _ in METRICS:
            m = entry["metrics"][key]
            ci = (f" [{_fmt(m['ci_low'], scale, digits)}, {_fmt(m['ci_high'], scale, digits)}]"
                  if np.isfinite(m["ci_low"]) else "")
            cells.append(_fmt(m["mean"], scale, digits) + ci)
        lines.append(f"| {variant} | {len(entry['seeds'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(summary: dict[str, Any], corpus: str) -> str:
    keys = [m for m in METRICS if m[0] != "fdd"]  # FDD is ~0 by construction on the synthetic head
    lines = ["| loss − mse | " + " | ".join(f"Δ {m[1]}" for m in keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for variant, entry in summary[corpus].items():
        if variant == "mse":
            continue
        cells = []
        for key, _, scale, digits, _ in keys:
            d = entry["metrics"][key].get("diff_vs_mse")
            if d is None:
                cells.append("—")
                continue
            verdict_text = f" **{d['verdict']}**" if "verdict" in d else ""  # range: no better/worse direction
            cells.append(f"{_fmt(d['mean'], scale, digits)} [{_fmt(d['ci_low'], scale, digits)}, "
                         f"{_fmt(d['ci_high'], scale, digits)}]{verdict_text}")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def answer(summary: dict[str, Any], corpus: str) -> str:
    """One sentence per corpus from the paired LVE differences (the paper's metric)."""
    parts = []
    for variant, entry in summary[corpus].items():
        d = entry["metrics"]["lve"].get("diff_vs_mse")
        if d is None:
            continue
        parts.append(f"`{variant}` {d['verdict']} (Δ LVE {d['mean'] * 1e5:+.3f}e-5, 95 % CI "
                     f"[{d['ci_low'] * 1e5:+.3f}, {d['ci_high'] * 1e5:+.3f}]e-5)")
    return "; ".join(parts) if parts else "no comparison (mse or the other losses not run)"


# ------------------------------------------------------------------------------------- figures


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> str:
    from talkface.io.fileio import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    _pyplot().close(fig)
    return path.name


def plot_lip_opening(runs: dict[str, dict[str, list[dict[str, Any]]]], fps: float, path: Path) -> str | None:
    """GT vs every loss's lip opening on one held-out clip of a training speaker, per corpus (first seed)."""
    rows = []
    for corpus, by_variant in runs.items():
        first = next(iter(by_variant.values()))[0]["clips"]
        name = next((n for n, c in first.items() if c["seen"]), next(iter(first), None))
        if name is not None:
            rows.append((corpus, name))
    if not rows:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), 1, figsize=(11, 3.0 * len(rows)), squeeze=False)
    for ax, (corpus, name) in zip(axes[:, 0], rows, strict=True):
        by_variant = runs[corpus]
        gt = np.asarray(next(iter(by_variant.values()))[0]["clips"][name]["gt"]) * 1000
        ax.plot(np.arange(len(gt)) / fps, gt, color="k", lw=2.5, label="ground truth")
        for variant, records in by_variant.items():
            pred = np.asarray(records[0]["clips"][name]["pred"]) * 1000
            ax.plot(np.arange(len(pred)) / fps, pred, lw=1.2, label=variant)
        ax.set(xlabel="seconds", ylabel="lip opening (mm)", title=f"corpus {corpus}: {name} (first seed)")
    axes[0, 0].legend(fontsize=8, ncol=3)
    fig.tight_layout()
    return _save(fig, path)


def plot_differences(summary: dict[str, Any], path: Path) -> str | None:
    """Paired LVE difference against mse with its 95 % CI, per corpus and loss."""
    plt = _pyplot()
    corpora = list(summary)
    variants = list(dict.fromkeys(v for c in corpora for v in summary[c] if v != "mse"))
    if not variants:
        return None
    fig, ax = plt.subplots(figsize=(9, 3.8))
    width = 0.8 / len(corpora)
    for k, corpus in enumerate(corpora):
        nan = {"mean": np.nan, "ci_low": np.nan, "ci_high": np.nan}
        d = [summary[corpus].get(v, {}).get("metrics", {}).get("lve", {}).get("diff_vs_mse", nan) for v in variants]
        x = np.arange(len(variants)) + (k - (len(corpora) - 1) / 2) * width
        mean = np.array([e["mean"] for e in d]) * 1e5
        err = np.array([[e["mean"] - e["ci_low"], e["ci_high"] - e["mean"]] for e in d]).T * 1e5
        ax.errorbar(x, mean, yerr=np.nan_to_num(err), fmt="o", capsize=3, label=corpus)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(variants)), variants)
    ax.set(ylabel="Δ LVE vs mse ×1e-5 m² (95 % CI)", title="paired per-seed difference (below 0: better than mse)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def expected_alignment(cost: np.ndarray, gamma: float) -> tuple[float, np.ndarray]:
    """Soft-DTW value and expected alignment E = dR[n,m]/dC (Cuturi & Blondel 2017), float64.

    Args:
        cost: (n, m) frame-pair costs (m² for squared distances); gamma: smoothing in the same units.

    Returns:
        (R[n, m], E (n, m)): E is in [0, 1] with E[0, 0] = E[-1, -1] = 1; a hard path has E = 1 on its cells.
    """
    n, m = cost.shape
    c = np.zeros((n + 2, m + 2))
    c[1:n + 1, 1:m + 1] = cost
    r = np.full((n + 2, m + 2), math.inf)
    r[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            a, b, d = r[i - 1, j - 1], r[i - 1, j], r[i, j - 1]
            low = min(a, b, d)  # shift by the minimum: exp(-x/γ) underflows at small γ otherwise
            total = sum(math.exp(-(v - low) / gamma) for v in (a, b, d) if v < math.inf)
            r[i, j] = c[i, j] + low - gamma * math.log(total)
    value = float(r[n, m])
    r[n + 1, :], r[:, m + 1] = -math.inf, -math.inf
    r[n + 1, m + 1] = value
    e = np.zeros((n + 2, m + 2))
    e[n + 1, m + 1] = 1.0
    for i in range(n, 0, -1):
        for j in range(m, 0, -1):
            here = r[i, j]
            e[i, j] = (e[i + 1, j] * math.exp((r[i + 1, j] - here - c[i + 1, j]) / gamma)
                       + e[i, j + 1] * math.exp((r[i, j + 1] - here - c[i, j + 1]) / gamma)
                       + e[i + 1, j + 1] * math.exp((r[i + 1, j + 1] - here - c[i + 1, j + 1]) / gamma))
    return value, e[1:n + 1, 1:m + 1]


# ------------------------------------------------------------------------------------- report


def versions() -> dict[str, str]:
    """Versions and the machine, CPU model included: training is float-exact on one machine, not across CPU
    models (other kernels, other rounding, which the Soft-DTW runs on corpus b amplify into other numbers)."""
    import torch

    import talkface

    if str(Path(__file__).parent) not in sys.path:  # imported by path (tests): _docs sits beside this script
        sys.path.insert(0, str(Path(__file__).parent))
    from _docs import cpu_name

    return {"talkface": talkface.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(),
            "machine": f"{platform.machine()} ({cpu_name()}), {os.cpu_count()} CPU cores"}


def _load() -> str:
    """The machine's load average when the report is written (timings on shared cores depend on it)."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average unknown"
    return f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} over 1 / 5 / 15 min when written"


def write_json(setup: Setup, result: dict[str, Any], summary: dict[str, Any], out: Path, command: str) -> Path:
    from talkface.io.fileio import write_text_atomic

    def clean(x: Any) -> Any:  # JSON has no NaN: write null
        if isinstance(x, float):
            return x if math.isfinite(x) else None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    doc = {
        "command": command, "wall_s": result["wall_s"], "setup": asdict(setup), "versions": versions(),
        "group": "all test predictions (held-out sentences of training speakers + unseen speakers under every "
                 "training style)",
        "metrics": {m[0]: {"header": m[1], "lower_is_better": m[4]} for m in METRICS},
        "corpora": {c: {"timing": CORPORA[c], "description": CORPUS_TEXT[c]} for c in result["runs"]},
        "results": summary,
        "seen_speakers_only": summarize(setup, result["runs"], group="seen"),
    }
    return write_text_atomic(out / "results.json", json.dumps(clean(doc), indent=1) + "\n")


def write_report(setup: Setup, result: dict[str, Any], out: Path, command: str, note: str = "") -> Path:
    """docs/results.md, docs/results.json and the figures (atomic writes)."""
    from talkface.io.fileio import write_text_atomic
    from talkface.model import builtin_encoder_info

    out.mkdir(parents=True, exist_ok=True)
    runs = result["runs"]
    summary = summarize(setup, runs)
    seen = summarize(setup, runs, group="seen")
    write_json(setup, result, summary, out, command)
    figs = {"lips": plot_lip_opening(runs, setup.fps, out / "results_lip_opening.png"),
            "diff": plot_differences(summary, out / "results_differences.png")}
    every = [r for by_v in runs.values() for rs in by_v.values() for r in rs]
    run_s = np.array([r["run_s"] for r in every])
    reused = sum(bool(r.get("reused")) for r in every)
    cpu_s = np.array([r.get("cpu_s", np.nan) for r in every])
    v = versions()
    info = builtin_encoder_info(setup.encoder) if setup.encoder == "synthetic-phonetic" else {}
    acc = info.get("heldout_accuracy", {}).get("heldout_new_voice", {}).get("frame_accuracy")
    how = "fine-tuned, CNN frozen" if setup.finetune else "frozen"
    encoder = (f"the shipped `{setup.encoder}` wav2vec 2.0 ({how}; held-out phoneme frame accuracy "
               f"{acc:.3f} on unseen voices)" if acc is not None else f"`{setup.encoder}` ({how})")
    features = ("its transformer fine-tuned with the decoder by talkface's trainer (FaceFormer's recipe; "
                "the CNN's features cached per clip)" if setup.finetune else "its features computed once per clip")
    img = lambda key, alt: f"![{alt}]({figs[key]})\n" if figs[key] else ""  # noqa: E731
    sections = []
    for corpus in runs:
        sections.append(f"""### Corpus {corpus}: {CORPUS_TEXT[corpus]}

**Answer: {answer(summary, corpus)}.**

Mean over seeds [95 % CI], all test predictions:

{results_table(summary, corpus)}

Paired per-seed difference against `mse` (same seed, same data order) [95 % CI] and verdict:

{paired_table(summary, corpus)}

Training speakers on held-out sentences only (the group the demo reports):

{results_table(seen, corpus)}
""")
    text = f"""# Does Soft-DTW beat MSE?

Generated by `benchmarks/softdtw_vs_mse.py` (issues #11, #17); machine-readable numbers in
[results.json](results.json). Rerun with:

    {command}

Wall time {result['wall_s'] / 60:.1f} min{f' ({reused} of {len(every)} runs reused from the work folder)' if reused
else ''}; per run (train + test generation) {np.min(run_s):.0f}–{np.max(run_s):.0f} s wall (median
{np.median(run_s):.0f} s), {np.sum(cpu_s) / 60:.1f} CPU-min for all {len(every)} runs ({_load()}).
talkface {v['talkface']}, torch {v['torch']}, numpy {v['numpy']}, Python {v['python']}; {v['machine']};
{result.get('parallel', '')}.
{chr(10) + note + chr(10) if note else ''}
## Setup

- Corpora: synthetic, {setup.num_speakers} speakers ({setup.num_train_speakers} train, the rest unseen) ×
  {setup.num_sentences} sentences (espeak-ng speech, the same in every corpus), corpus seed {setup.corpus_seed},
  {setup.fps:g} fps; sentences train {setup.train_sentences}, val {setup.val_sentences} (unused), test
  {setup.test_sentences} (inclusive). The corpora differ only in the motion's timing against the audio:
  {'; '.join(f'`{c}` {CORPUS_TEXT[c]}' for c in setup.corpora)}.
- Model: {encoder}, {features}; talkface's FaceFormer decoder
  (`TalkFaceModel`, overrides {setup.model_overrides}) trained autoregressively as FaceFormer trains
  (gradients through fed-back frames); the same model and data order for every loss at a given seed.
- Recipe: Adam lr {setup.lr:g}, batch {setup.batch_size}, {setup.epochs} epochs, seeds {list(setup.seeds)};
  the last weights are evaluated (no selection on the test split).
- Losses: `mse` (FaceFormer's); `softdtw` (the paper's: γ = {setup.gamma:g}, squared-Euclidean frame cost,
  no band); `softdtw-euclid` (the Euclidean cost ‖x_i − y_j‖ of the paper's formula 3, same γ);
  `softdtw+mse` (MSE weight = mean train frames × V·3, so both terms are sums over the clip);
  `softdtw-band{BAND}` (Sakoe-Chiba half-width {BAND} frames).
- Metrics (test split; unseen speakers generated under every training style): LVE = mean over frames of
  the largest squared lip-vertex error (the paper's, frames pooled); "best shift" = LVE after the constant
  shift (≤ {SHIFT_S * 1000:.0f} ms) that minimises it; "after DTW" = mean lip error along the best monotone
  alignment within ±{SHIFT_S * 1000:.0f} ms (a timing-free shape error); lip corr = Pearson correlation of the
  lip opening; opening range = (max − min of the predicted lip opening) / (that of the ground truth), below 1
  means damped, over-smoothed motion; FDD = upper-face dynamics deviation (the synthetic head's upper face
  does not move, so it is ~0 by construction).
- Statistics: mean over seeds with a two-sided 95 % t interval; for each loss the per-seed difference to
  `mse` at the same seed, its mean and 95 % t interval; "better"/"worse" when that interval excludes 0,
  otherwise "no detectable difference".

## Results

{chr(10).join(sections)}
{img('diff', 'paired LVE differences')}
{img('lips', 'lip opening GT vs losses')}
"""
    return write_text_atomic(out / "results.md", text)


# ------------------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("docs"), help="report folder (results.md, results.json, png)")
    p.add_argument("--work", type=Path, default=None, help="corpora and runs (kept; reruns reuse finished runs)")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None)
    p.add_argument("--corpora", nargs="+", choices=list(CORPORA), default=None)
    p.add_argument("--tiny", action="store_true", help="seconds-long end-to-end setting (tests)")
    p.add_argument("--finetune", action="store_true",
                   help="fine-tune the encoder's transformer with the decoder (FaceFormer's recipe; slower)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 1e-3)")
    p.add_argument("--finished-only", action="store_true",
                   help="train nothing: report the whole cells (every seed) already finished in --work")
    p.add_argument("--note", default="", help="a paragraph for the report's top (e.g. why a run was reduced)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (1: in this one)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per worker")
    return p.parse_args(argv)


def setup_from_args(args: argparse.Namespace) -> Setup:
    """The Setup the flags describe; ConfigError on bad values."""
    from talkface.errors import ConfigError

    setup = tiny_setup() if args.tiny else Setup()
    changes: dict[str, Any] = {}
    if args.seeds:
        changes["seeds"] = tuple(args.seeds)
    if args.epochs is not None:
        if args.epochs < 1:
            raise ConfigError(f"--epochs {args.epochs}: expected a positive number")
        changes["epochs"] = args.epochs
    if args.lr is not None:
        if not (np.isfinite(args.lr) and args.lr > 0):
            raise ConfigError(f"--lr {args.lr}: expected a positive number")
        changes["lr"] = args.lr
    if args.finetune:
        changes["finetune"] = True
    if args.variants:
        changes["variants"] = tuple(args.variants)
    if args.corpora:
        changes["corpora"] = tuple(args.corpora)
    if args.jobs < 1 or args.threads < 1:
        raise ConfigError(f"--jobs {args.jobs} --threads {args.threads}: expected positive numbers")
    return replace(setup, **changes)


def rerun_command(argv: list[str], cwd: Path) -> str:
    """The shell command that reruns this experiment, without this machine's folders in it.

    An absolute ``--out`` or ``--work`` folder is written relative to ``cwd`` when it lies inside it, else as
    a folder of the same name in ``cwd``: ``--work`` only caches the corpus and the runs, and ``--out`` only
    says where the report goes, so neither place changes the results.
    """
    import shlex

    words: list[str] = []
    folder_flag = None
    for arg in argv:
        flag, eq, value = arg.partition("=")
        if folder_flag is not None or (eq and flag in ("--out", "--work")):
            path = Path(arg if folder_flag is not None else value)
            if path.is_absolute():
                path = path.relative_to(cwd) if path.is_relative_to(cwd) else Path(path.name)
            arg = str(path) if folder_flag is not None else f"{flag}={path}"
            folder_flag = None
        elif arg in ("--out", "--work"):
            folder_flag = arg
        words.append(arg)
    return " ".join(["python", "benchmarks/softdtw_vs_mse.py", *(shlex.quote(w) for w in words)])


def main(argv: list[str] | None = None) -> int:

    from talkface.errors import TalkfaceError

    args = parse_args(argv)
    try:
        setup = setup_from_args(args)
    except TalkfaceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    words = [w for w in (argv or sys.argv[1:]) if w != "--finished-only"]  # reporting flags, not the experiment
    if "--note" in words:  # the note is prose for the report
        i = words.index("--note")
        del words[i:i + 2]
    command = rerun_command(words, Path.cwd())
    total = len(setup.corpora) * len(setup.variants) * len(setup.seeds)
    print(f"{total} runs of {setup.epochs} epochs; work folder {args.work or '(temporary)'}", flush=True)
    with tempfile.TemporaryDirectory(prefix="softdtw_vs_mse_") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        try:
            result = run_experiment(setup, work, lambda msg: print(msg, flush=True), jobs=args.jobs,
                                    threads=args.threads, finished_only=args.finished_only)
            result["parallel"] = f"{args.jobs} worker(s), {args.threads} torch thread(s) each"
            report = write_report(setup, result, args.out, command.strip(), note=args.note)
        except TalkfaceError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    print(f"wrote {report} in {result['wall_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
