"""Training: FaceFormer with the Soft-DTW loss (or MSE), validation by autoregressive generation,
atomic best/last checkpoints, a metrics log, exact resume (``talkface.train.state``), Ctrl-C safety,
AMP on CUDA, TensorBoard when installed and DDP under torchrun (``talkface.train.distributed``).
The model computes predictions; losses are composed in ``talkface.train.common``, the epochs run in
``talkface.train.loop``.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from talkface.config import TrainConfig
from talkface.data import load_prepared
from talkface.errors import ConfigError, DatasetError
from talkface.runtime import resolve_device
from talkface.train import distributed
from talkface.train.common import ProgressFn, TrainResult
from talkface.train.loop import TrainLoop


def train(
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: TrainConfig,
    *,
    preset: str | None = None,
    model_overrides: dict[str, Any] | None = None,
    encoder_config: dict[str, Any] | None = None,
    device: str = "auto",
    overwrite: bool = False,
    resume: bool = False,
    state_every_steps: int | None = None,
    on_progress: ProgressFn | None = None,
) -> TrainResult:
    """Train a model on a prepared dataset and write a run folder (see ``talkface.train.runs``).

    The resumable state ``RUN/state.pt`` is written at every epoch end, every ``state_every_steps``
    optimizer steps, and on Ctrl-C; ``resume=True`` continues from it and ends with the same weights,
    bit for bit on CPU, as a run that was never stopped. Under ``torchrun`` (``WORLD_SIZE > 1``) the
    model is wrapped in DistributedDataParallel and ``config.batch_size`` is the global batch.

    Args:
        data_dir: output of ``talkface prepare``.
        out_dir: run folder (refused when not empty unless ``overwrite`` or ``resume``).
        config: the training recipe. On resume it must equal the run's, except ``epochs`` (may be raised).
        preset: ``vocaset``/``biwi`` model numbers; default: D 64, period = fps.
        model_overrides: ModelConfig fields to override (e.g. ``feature_dim``).
        encoder_config: a ``Wav2Vec2Config`` dict for a random-init encoder (tests, demo); when None
            the pretrained encoder ``config.encoder`` is loaded once, here (on resume: neither, the
            saved state holds the encoder's config and weights).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``.
        overwrite: write into a non-empty run folder.
        resume: continue the run in ``out_dir`` from its saved state.
        state_every_steps: also save the state every this many optimizer steps (default: epoch ends
            and interruptions only).
        on_progress: called (on rank 0 only) with events ``start`` (epochs, steps_per_epoch, device,
            start_epoch, start_step, num_train_clips, tensorboard, world_size), ``step`` (epoch, step,
            loss, clips), ``validate`` (epoch), ``epoch`` (the epoch's record) and ``warning`` (kind, epoch,
            message: validation says the model is not learning lip sync, ``talkface.train.diagnostics``;
            without ``on_progress`` it is a ``RuntimeWarning``).

    Returns:
        A ``TrainResult``; after a resume its history includes the epochs run before.

    Raises:
        DatasetError: no training clips, or a dataset whose train split differs from the resumed run's.
        ConfigError: bad options, resume with different settings, resume with overwrite, --amp on CPU.
        CheckpointError: resume without a (readable) state in the run folder.
        OutputError: a non-empty run folder without ``overwrite``/``resume``.
        EncoderError: encoder unavailable.
        InterruptedRun: Ctrl-C; the state was saved and the message gives the resume command.
    """
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other: --resume continues the run in --out, "
                          "--overwrite starts a new one there; pass one of them")
    if state_every_steps is not None and (not isinstance(state_every_steps, int) or state_every_steps <= 0):
        raise ConfigError(f"state_every_steps must be a positive integer or None, got {state_every_steps!r}")
    dataset = load_prepared(data_dir)
    train_clips, val_clips = dataset.split("train"), dataset.split("val")
    if not train_clips:
        raise DatasetError(f"{data_dir}: the train split is empty; check the split file used by `talkface prepare`")
    device = resolve_device(device)
    if config.amp and not device.startswith("cuda"):
        raise ConfigError(f"--amp needs CUDA (autocast to bfloat16/float16 on the GPU); the device is {device}; "
                          "drop --amp or train with --device cuda")
    ctx = distributed.init_distributed(device)
    try:
        distributed.check_batch_size(config.batch_size, ctx)
        loop = TrainLoop.create(data_dir, out_dir, config, dataset, train_clips, val_clips, ctx=ctx, preset=preset,
                            model_overrides=model_overrides, encoder_config=encoder_config, overwrite=overwrite,
                            resume=resume, state_every_steps=state_every_steps,
                            emit=on_progress if (on_progress and ctx.is_main) else _warn_only)
        return loop.run()
    finally:
        distributed.shutdown(ctx)


def _warn_only(event: dict[str, Any]) -> None:
    """The progress sink when nobody listens: the lip-sync warnings still reach the caller, as RuntimeWarnings."""
    if event.get("event") == "warning":
        warnings.warn(event["message"], RuntimeWarning, stacklevel=2)
