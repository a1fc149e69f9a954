"""Evaluation: the papers' metrics (LVE, FDD, MVE), vertex region files, and the evaluate() report and plot."""

from talkface.evaluate.evaluation import (
    Evaluation,
    aggregate,
    csv_text,
    evaluate,
    mark_best,
    per_style_lve,
    plot_lip_errors,
    resolve_regions,
    write_csv,
)
from talkface.evaluate.metrics import (
    align_lengths,
    fdd,
    lip_max_errors,
    lve,
    lve_mm,
    mve,
    pearson,
    squared_errors,
    upper_face_dynamics,
)
from talkface.evaluate.regions import check_regions, lip_region, load_regions, upper_face

__all__ = [
    "aggregate",
    "align_lengths",
    "check_regions",
    "csv_text",
    "evaluate",
    "Evaluation",
    "fdd",
    "lip_max_errors",
    "lip_region",
    "load_regions",
    "lve",
    "lve_mm",
    "mark_best",
    "mve",
    "pearson",
    "per_style_lve",
    "plot_lip_errors",
    "resolve_regions",
    "squared_errors",
    "upper_face",
    "upper_face_dynamics",
    "write_csv",
]
