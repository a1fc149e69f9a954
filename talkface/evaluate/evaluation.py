"""``talkface evaluate``: score a split the way the papers do (conventions in ``talkface.evaluate.metrics``).

Predictions: generated from a checkpoint (FaceFormer's protocol: a training speaker under its own
style, an unseen speaker under every training style) or read from a folder (``<clip>.npy|.npz``, or
``<clip>_condition_<style>.npy|.npz`` for several styles, FaceFormer's naming). Each (clip, style)
pair is one row, truncated to the shorter of prediction and ground truth.

Aggregation (documented because papers do not say, FaceFormer #108):
- **mean over styles** (the headline figure): every style of a sequence counts with weight 1/S (S =
  that sequence's number of styles), so LVE, LVE (mm) and MVE are frame-pooled over sequences with
  each sequence's frames averaged over its styles; FDD is the mean over sequences of the mean over
  styles. With one style per sequence (seen speakers) this is CodeTalker's frame-pooled figure.
- **best style**: per sequence the style with the lowest LVE; those rows are pooled the same way.
  It is never above the mean over styles when a sequence's styles have equal lengths.

Lip-sync measures (``talkface.evaluate.metrics``, shift limit and DTW band ``MAX_SHIFT_S`` = 200 ms) per
row: ``lve_shift`` and its ``shift_frames``/``shift_ms``, ``lve_dtw``, ``lip_corr``, ``opening_range``.
Pooled with the same row weights: ``lve_shift``/``lve_dtw`` frame-weighted like LVE, ``lip_corr``,
``opening_range`` and ``shift_ms`` as weighted means over rows (rows whose value is undefined, nan, left out).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from talkface.data import load_prepared
from talkface.errors import ConfigError, DatasetError
from talkface.evaluate import metrics
from talkface.evaluate.regions import check_regions, lip_opening_regions, lip_region, load_regions, upper_face
from talkface.inference.generate import animate, check_finite_output, evaluation_styles
from talkface.io.animation import load_animation
from talkface.io.audio import SAMPLE_RATE
from talkface.io.fileio import atomic_path, write_text_atomic
from talkface.model.checkpoint import load_checkpoint
from talkface.runtime import resolve_device

CSV_COLUMNS = ("clip", "speaker", "style", "frames", "lve", "lve_mm", "fdd", "mve", "lve_shift", "shift_frames",
               "shift_ms", "lve_dtw", "lip_corr", "opening_range", "best_style")
LIP_SYNC_KEYS = ("lve_shift", "lve_dtw", "lip_corr", "opening_range", "shift_ms")
AGGREGATION = ("mean over styles: each style of a sequence weighs 1/S; frames pooled over sequences for "
               "LVE/MVE, FDD = mean over sequences. best style: per sequence the style with the lowest LVE.")


@dataclass
class Evaluation:
    """The outcome of ``evaluate``.

    Attributes:
        report: JSON-able summary: split, sequences, frames, lve (m²), lve_mm, fdd (m², signed), mve (m),
            lve_shift (m²), lve_dtw (m²), lip_corr, opening_range, shift_ms for the mean over styles,
            ``best_style`` with the same keys, ``per_clip`` (clip -> the same keys, mean over its styles),
            ``per_style`` LVE, regions, ``max_shift_frames`` and ``per_sequence`` rows (``CSV_COLUMNS``).
        lip_frames: clip -> style -> (T,) float64 per-frame max squared lip error, m².
        fps: frame rate of the dataset.
    """

    report: dict[str, Any]
    lip_frames: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    fps: float = 30.0

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.report["per_sequence"]


def _prediction_files(pred_dir: Path, clip: str) -> list[Path]:
    exact = [pred_dir / f"{clip}{s}" for s in (".npz", ".npy") if (pred_dir / f"{clip}{s}").is_file()]
    return exact or sorted(pred_dir.glob(f"{clip}_condition_*.np[yz]"))


def _style_of(path: Path, clip: str) -> str:
    return path.stem[len(clip) + len("_condition_"):] if path.stem.startswith(f"{clip}_condition_") else ""


def _load_regions(dataset: Any, masks: Path | None) -> tuple[dict[str, np.ndarray], str]:
    if masks is not None:
        return load_regions(masks, dataset.num_vertices), str(masks)
    regions = {k: np.asarray(v, dtype=np.int64) for k, v in dataset.regions.items()}
    source = f"{dataset.path}/regions.npz"
    check_regions(regions, dataset.num_vertices, source)
    return regions, source


def resolve_regions(dataset: Any, masks: Path | None) -> tuple[np.ndarray, np.ndarray, str]:
    """(lip indices, upper-face indices, where they came from) from ``masks`` or the dataset's regions.

    Raises:
        DatasetError: no lip region, or indices outside the mesh.
    """
    regions, source = _load_regions(dataset, masks)
    lips = lip_region(regions)
    if lips is None:
        raise DatasetError(f"{source}: no lip region (named lips, lve or lip; found {', '.join(regions) or 'none'}); "
                           "pass --masks FLAME_masks.pkl, a regions .npz, or BIWI's regions/ folder")
    return np.asarray(lips), upper_face(regions), source


def evaluate(
    data: Path,
    *,
    split: str = "test",
    checkpoint: Path | None = None,
    pred: Path | None = None,
    masks: Path | None = None,
    device: str = "auto",
    on_progress: Callable[[int, int, str], None] | None = None,
) -> Evaluation:
    """Score a split with LVE, LVE (mm), FDD, MVE and the lip-sync measures (aggregation: module docstring).

    Args:
        data: prepared dataset folder.
        split: "train", "val" or "test".
        checkpoint: generate predictions with this model, or
        pred: read them from this folder.
        masks: region file overriding the dataset's regions (``talkface.evaluate.regions.load_regions``).
        device: torch device for ``checkpoint``.
        on_progress: called with (done, total, clip name) after each clip.

    Raises:
        DatasetError: empty split or no lip region; ConfigError: missing predictions.
    """
    dataset = load_prepared(data)
    clips = dataset.split(split)
    if not clips:
        raise DatasetError(f"{data}: split {split!r} is empty; choose another --split or check the split file "
                           "used by `talkface prepare`")
    lips, upper, source = resolve_regions(dataset, masks)
    regions, _ = _load_regions(dataset, masks)
    max_shift = metrics.max_shift_frames(dataset.fps)
    opening_source = ""
    model = None
    if checkpoint is not None:
        device = resolve_device(device)
        model, _ = load_checkpoint(checkpoint, device=device)
        model.eval()
    rows: list[dict[str, Any]] = []
    lip_frames: dict[str, dict[str, np.ndarray]] = {}
    mve_frames: dict[tuple[str, str], np.ndarray] = {}
    num_frames = 0
    for done, info in enumerate(clips, 1):
        clip = dataset.load_clip(info)
        num_frames += int(clip.vertices.shape[0])
        if model is not None:
            preds = _generate_all(model, clip, device, checkpoint)
        else:
            files = _prediction_files(pred, info.name)  # type: ignore[arg-type]
            if not files:
                raise ConfigError(f"{pred}: no prediction for clip {info.name} ({info.name}.npy or _condition_*.npy)")
            preds = [(_style_of(f, info.name), load_animation(f, fps=dataset.fps).vertices) for f in files]
            for f, (_, p) in zip(files, preds, strict=True):
                if p.shape[1:] != clip.vertices.shape[1:]:
                    raise ConfigError(f"{f}: prediction has {p.shape[1]} vertices per frame, the dataset "
                                      f"{clip.vertices.shape[1]}; predictions must use the dataset's mesh")
        try:
            top, bottom, opening_source = lip_opening_regions(regions, clip.template)
        except DatasetError as e:  # no height to split the lips by: the other measures still stand
            top = bottom = None
            opening_source = f"unavailable ({e})"
        for style, p in preds:
            p_, g_ = metrics.align_lengths(p, clip.vertices)
            lip = metrics.lip_max_errors(p_, g_, lips).numpy()
            lip_frames.setdefault(info.name, {})[style] = lip
            mve_frames[(info.name, style)] = metrics.squared_errors(p_, g_).sqrt().mean(dim=1).numpy()
            rows.append({"clip": info.name, "speaker": clip.speaker, "style": style, "frames": int(g_.shape[0]),
                         "lve": float(lip.mean()), "lve_mm": float((np.sqrt(lip) * 1000).mean()),
                         "fdd": float(metrics.fdd(p_, g_, clip.template, upper)) if upper.size else None,
                         "mve": float(mve_frames[(info.name, style)].mean()),
                         **lip_sync_row(p_, g_, lips, top, bottom, max_shift, dataset.fps), "best_style": False})
        if on_progress is not None:
            on_progress(done, len(clips), info.name)
    mark_best(rows)
    report = {
        "split": split, "sequences": len(clips), "frames": num_frames, "predictions": len(rows),
        "aggregation": AGGREGATION,
        **aggregate(rows, lip_frames, mve_frames, best_only=False),
        "best_style": aggregate(rows, lip_frames, mve_frames, best_only=True),
        "per_style": per_style_lve(rows, lip_frames),
        "per_clip": {name: aggregate([r for r in rows if r["clip"] == name], lip_frames, mve_frames, best_only=False)
                     for name in lip_frames},
        "regions": {"source": source, "lips": int(np.unique(lips).size), "upper_face": int(upper.size),
                    "lip_opening": opening_source},
        "max_shift_frames": max_shift,
        "per_sequence": rows,
    }
    return Evaluation(report, lip_frames, dataset.fps)


def lip_sync_row(pred: Any, gt: Any, lips: Any, upper_lip: Any, lower_lip: Any, max_shift: int,
                 fps: float) -> dict[str, Any]:
    """One (sequence, style)'s lip-sync measures: lve_shift (m²), shift_frames, shift_ms, lve_dtw (m²),
    lip_corr and opening_range (None where undefined: a flat opening, or no upper/lower lip given).
    pred, gt: (T, V, 3) metres."""
    shift, lve_shift = metrics.best_shift_lve(pred, gt, lips, max_shift)
    corr = ratio = float("nan")
    if upper_lip is not None and lower_lip is not None:
        po, go = metrics.lip_opening(pred, upper_lip, lower_lip), metrics.lip_opening(gt, upper_lip, lower_lip)
        corr, ratio = metrics.pearson(po, go), metrics.opening_range(po, go)
    return {"lve_shift": lve_shift, "shift_frames": shift, "shift_ms": 1000.0 * shift / fps,
            "lve_dtw": metrics.dtw_lip_error(pred, gt, lips, max_shift),
            "lip_corr": None if np.isnan(corr) else corr, "opening_range": None if np.isnan(ratio) else ratio}


def mark_best(rows: list[dict[str, Any]]) -> None:
    """Set ``best_style`` on the lowest-LVE row of each clip (the first one on ties)."""
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["clip"] not in best or r["lve"] < best[r["clip"]]["lve"]:
            best[r["clip"]] = r
    for r in rows:
        r["best_style"] = best[r["clip"]] is r


def aggregate(rows: list[dict[str, Any]], lip_frames: dict[str, dict[str, np.ndarray]],
              mve_frames: dict[tuple[str, str], np.ndarray], *, best_only: bool) -> dict[str, float | None]:
    """Pooled lve (m²), lve_mm, mve (m), fdd (mean over sequences) and the lip-sync measures of ``rows``.

    Each row weighs 1/S (S = rows of its clip) for the mean over styles, or 1 for its clip's best row
    when ``best_only``. lve_shift and lve_dtw are frame-weighted (like LVE); lip_corr, opening_range and
    shift_ms are weighted means over the rows where they are defined (None when none is).
    """
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["clip"]] = counts.get(r["clip"], 0) + 1
    chosen = [(r, 1.0 if best_only else 1.0 / counts[r["clip"]]) for r in rows if r["best_style"] or not best_only]
    total = sum(w * r["frames"] for r, w in chosen)
    lip = [(lip_frames[r["clip"]][r["style"]], w) for r, w in chosen]
    fdd_by_clip: dict[str, list[float]] = {}
    for r, _ in chosen:
        if r["fdd"] is not None:
            fdd_by_clip.setdefault(r["clip"], []).append(r["fdd"])
    return {
        "lve": float(sum(w * e.sum() for e, w in lip) / total),
        "lve_mm": float(sum(w * (np.sqrt(e) * 1000).sum() for e, w in lip) / total),
        "fdd": float(np.mean([np.mean(v) for v in fdd_by_clip.values()])) if fdd_by_clip else None,
        "mve": float(sum(w * mve_frames[(r["clip"], r["style"])].sum() for r, w in chosen) / total),
        **{key: _weighted_mean(chosen, key, by_frames=key in ("lve_shift", "lve_dtw")) for key in LIP_SYNC_KEYS},
    }


def _weighted_mean(chosen: list[tuple[dict[str, Any], float]], key: str, *, by_frames: bool) -> float | None:
    pairs = [(r[key], w * (r["frames"] if by_frames else 1.0)) for r, w in chosen if r.get(key) is not None]
    total = sum(w for _, w in pairs)
    return float(sum(v * w for v, w in pairs) / total) if pairs and total > 0 else None


def per_style_lve(rows: list[dict[str, Any]], lip_frames: dict[str, dict[str, np.ndarray]]) -> dict[str, float]:
    """Frame-pooled LVE (m²) of each style label over the sequences predicted under it."""
    pooled: dict[str, list[np.ndarray]] = {}
    for r in rows:
        pooled.setdefault(r["style"], []).append(lip_frames[r["clip"]][r["style"]])
    return {s: float(np.concatenate(v).mean()) for s, v in pooled.items()}


def _generate_all(model: Any, clip: Any, device: str, checkpoint: Any = None) -> list[tuple[str, np.ndarray]]:
    styles = evaluation_styles(clip.speaker, model.config.speakers)
    return [(s.label, check_finite_output(animate(model, clip.audio, clip.template, s, device=device), model,
                                          checkpoint=checkpoint, audio=f"clip {clip.name}")) for s in styles]


def csv_text(rows: list[dict[str, Any]]) -> str:
    """The per-sequence rows as CSV (``CSV_COLUMNS``; metrics in SI units: m², mm, m², m)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else repr(r[k]) if isinstance(r[k], float) else r[k])
                         for k in CSV_COLUMNS})
    return out.getvalue()


def check_plot_clip(data: Path, split: str, clip: str | None) -> None:
    """Refuse a ``--plot-clip`` that is not in ``split``, before evaluating (and writing) anything.

    Raises:
        ConfigError: the clip is not in the split; DatasetError: the dataset cannot be read.
    """
    if clip is None:
        return
    names = [c.name for c in load_prepared(data).split(split)]
    if clip not in names:
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        raise ConfigError(f"--plot-clip {clip!r} is not in the {split} split of {data}; choose one of: {shown}")


def write_csv(path: str | os.PathLike[str], evaluation: Evaluation) -> Path:
    """Write the per-sequence rows as CSV, atomically."""
    return write_text_atomic(path, csv_text(evaluation.rows))


def plot_lip_errors(path: str | os.PathLike[str], evaluation: Evaluation, data: Path, clip: str | None = None) -> Path:
    """PNG of one sequence: the audio waveform above its per-frame lip error (mm, sqrt convention).

    Args:
        path: the .png to write.
        evaluation: from ``evaluate``.
        data: the prepared dataset (for the clip's audio).
        clip: clip name; default the first evaluated clip.

    Raises:
        ConfigError: ``clip`` was not evaluated.
    """
    from matplotlib.figure import Figure

    names = list(evaluation.lip_frames)
    name = clip or names[0]
    if name not in evaluation.lip_frames:
        raise ConfigError(f"--plot-clip {name!r} is not in the evaluated split; choose one of: {', '.join(names)}")
    dataset = load_prepared(data)
    info = next(c for c in dataset.clips if c.name == name)
    audio = dataset.load_clip(info).audio
    fig = Figure(figsize=(10, 5), dpi=100)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 2]})
    top.plot(np.arange(audio.size) / SAMPLE_RATE, audio, linewidth=0.5, color="0.3")
    top.set_ylabel("audio")
    top.set_title(f"{name}: per-frame lip error (max over lip vertices)")
    styles = evaluation.lip_frames[name]
    best = next((r["style"] for r in evaluation.rows if r["clip"] == name and r["best_style"]), None)
    for style, errors in styles.items():
        t = np.arange(errors.size) / evaluation.fps
        is_best = style == best and len(styles) > 1
        bottom.plot(t, np.sqrt(errors) * 1000, linewidth=1.5 if is_best else 0.8, alpha=1.0 if is_best else 0.5,
                    label=(style or "prediction") + (" (best)" if is_best else ""))
    if len(styles) > 1:
        mean = np.mean([np.sqrt(e[: min(map(len, styles.values()))]) * 1000 for e in styles.values()], axis=0)
        bottom.plot(np.arange(mean.size) / evaluation.fps, mean, color="k", linewidth=1.5, label="mean over styles")
    bottom.set_xlabel("time (s)")
    bottom.set_ylabel("lip error (mm)")
    bottom.legend(fontsize=7, ncol=3, loc="upper right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
