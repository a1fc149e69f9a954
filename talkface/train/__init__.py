"""Training: the train() entry point, its epoch loop, resumable state, run folders and DDP data parallelism."""

from talkface.train.common import (
    TrainResult,
    build_model_config,
    check_run_dir,
    evaluate_clips,
    make_optimizer,
    seed_everything,
    sequence_loss,
    write_loss_plot,
)
from talkface.train.distributed import DistContext
from talkface.train.loop import TrainLoop
from talkface.train.runs import RUN_ASSETS, RunAssets, copy_run_assets, load_run_assets
from talkface.train.state import STATE_FILE, Position, load_state, read_position
from talkface.train.trainer import train

__all__ = [
    "DistContext",
    "STATE_FILE",
    "Position",
    "load_state",
    "read_position",
    "RUN_ASSETS",
    "build_model_config",
    "check_run_dir",
    "copy_run_assets",
    "evaluate_clips",
    "load_run_assets",
    "make_optimizer",
    "RunAssets",
    "seed_everything",
    "sequence_loss",
    "train",
    "TrainLoop",
    "TrainResult",
    "write_loss_plot",
]
