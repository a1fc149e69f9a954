"""The run folder's assets, re-exported for training: they live in ``talkface.io.run_assets``, so that
``animate`` and ``stream`` read a run folder without importing the training stack (losses, optimizers)."""

from talkface.io.run_assets import RUN_ASSETS, RunAssets, copy_run_assets, load_run_assets, run_reads

__all__ = ["RUN_ASSETS", "RunAssets", "copy_run_assets", "load_run_assets", "run_reads"]
