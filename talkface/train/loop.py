"""The training loop behind ``talkface.train.train``: one session over the epochs, with the position
bookkeeping that makes its state resumable (see ``talkface.train.state``), validation and the epoch's
files on rank 0, AMP and TensorBoard.

Over 400 lines: a fresh run's hidden folder and its rename, every rank's saved generator states and the
failure paths (SIGTERM, a full disk) act on the same position and barriers as the loop itself, so they
stay beside it rather than in a module the loop would have to call back into.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shlex
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from talkface.config import ModelConfig, TrainConfig, to_dict
from talkface.data import pad_batch
from talkface.errors import CheckpointError, DatasetError, InterruptedRun, OutputError, TalkfaceError
from talkface.io.fileio import write_text_atomic, writing
from talkface.model import CACHE_DIR, FeatureCache, TalkFaceModel, load_pretrained_encoder_config
from talkface.model.checkpoint import save_checkpoint
from talkface.model.feature_cache import remove_stale_temp_files
from talkface.runtime import deferred_interrupt
from talkface.train import distributed
from talkface.train.common import (
    ProgressFn,
    TrainResult,
    build_model_config,
    check_run_dir,
    evaluate_clips,
    make_optimizer,
    seed_everything,
    sequence_loss,
    write_loss_plot,
)
from talkface.train.diagnostics import lip_sync_warning
from talkface.train.distributed import DistContext, barrier, shard_batch, sum_across
from talkface.train.runs import copy_run_assets, load_run_assets
from talkface.train.state import (
    STATE_FILE,
    Position,
    capture_rng,
    check_resumable,
    load_rank_rng,
    load_state,
    restore_rng,
    save_rank_rng,
    save_state,
)


@dataclass
class TrainLoop:
    """One training session: the objects it trains and the position it has reached."""

    data_dir: Path
    run_dir: Path
    config: TrainConfig
    dataset: Any
    train_clips: list[Any]
    val_clips: list[Any]
    ctx: DistContext
    model: Any  # the bare TalkFaceModel (checkpoints, validation)
    net: Any  # what the forward pass goes through: the model, or its DDP wrapper
    optimizer: Any
    scaler: Any  # float16 GradScaler, or None
    amp_dtype: Any  # torch dtype for autocast, or None
    data_rng: random.Random
    pos: Position
    best: float
    history: list[dict[str, Any]]
    state_every_steps: int | None
    emit: ProgressFn
    writer: Any = None  # TensorBoard SummaryWriter on rank 0, when tensorboard is installed
    lips: Any = None
    regions: dict[str, Any] | None = None  # the run's vertex regions: the lips and the lip opening's halves
    warned: set[str] = field(default_factory=set)  # lip-sync warnings already given in this session
    final_dir: Path | None = None  # a fresh run's name, while it is built in a hidden sibling (run_dir)
    rank_rng: list[dict[str, Any]] = field(default_factory=list)  # ranks > 0: the last saved RNG entries

    @classmethod
    def create(cls, data_dir: Any, out_dir: Any, config: TrainConfig, dataset: Any, train_clips: list[Any],
               val_clips: list[Any], *, ctx: DistContext, preset: str | None, model_overrides: dict[str, Any] | None,
               encoder_config: dict[str, Any] | None, overwrite: bool, resume: bool, state_every_steps: int | None,
               emit: ProgressFn) -> TrainLoop:
        import torch

        run = Path(out_dir)
        state = load_state(run) if resume else None
        if state is None:
            check_run_dir(run, overwrite=overwrite)
        distributed.barrier(ctx)  # every rank has checked the folder before rank 0 writes into it
        seed_everything(config.seed)
        model_config = build_model_config(dataset.meta, preset=preset, overrides=model_overrides)
        names = [c.name for c in train_clips]
        if state is not None:
            check_resumable(state, to_dict(config), to_dict(model_config), run)
            if state["train_clips"] != names:
                raise DatasetError(f"{data_dir}: its train split ({len(names)} clips) is not the one run {run} was "
                                   f"trained on ({len(state['train_clips'])} clips); resume with the same dataset")
            encoder_config = state["encoder_config"]
        pretrained = encoder_config is None
        model = TalkFaceModel(model_config, encoder_config or load_pretrained_encoder_config(config.encoder))
        if state is not None:
            try:
                model.load_state_dict(state["model"])
            except RuntimeError as e:
                raise CheckpointError(f"{run / STATE_FILE}: its weights do not fit the model its config "
                                      f"describes ({e}); the state is damaged, start again with --overwrite") from e
        elif pretrained:
            model.load_pretrained_encoder(config.encoder)
        model.to(ctx.device).train()
        # A fresh run is built in a hidden sibling and renamed when it first holds a saved state, so a run that
        # fails (or is killed) before that leaves no half-made folder, and --overwrite keeps the old run until then.
        building = run.with_name(f".{run.name}.partial") if state is None else run
        model.audio_encoder.feature_cache = make_feature_cache(config, building)
        optimizer = make_optimizer(model, config.lr)
        amp_dtype, scaler = _amp_setup(config, ctx.device)
        data_rng = random.Random(config.seed)
        if state is None:
            pos, best, history = Position(rng=capture_rng(data_rng)), float("inf"), []
        else:
            optimizer.load_state_dict(state["optimizer"])
            if scaler is not None and state.get("scaler") is not None:
                scaler.load_state_dict(state["scaler"])
            pos, best, history = state["position"], float(state["best"]), list(state["history"])
            restore_rng(pos.rng, data_rng)
        if ctx.rank > 0:  # dropout masks differ across ranks; the data order (data_rng) does not
            mine = load_rank_rng(run, ctx.rank, pos) if state is not None else None
            if mine is not None:
                restore_rng(mine, random.Random())  # data_rng stays rank 0's (every rank draws the same order)
                pos.rng = capture_rng(data_rng)
            else:
                if state is not None:
                    warnings.warn(f"{run}: no saved generator states of rank {ctx.rank} at epoch {pos.epoch} step "
                                  f"{pos.step}; its dropout masks will differ from an uninterrupted run", stacklevel=2)
                torch.manual_seed(config.seed + 7919 * ctx.rank + pos.global_step)
        loop = cls(Path(data_dir), building, config, dataset, train_clips, val_clips, ctx, model,
                   distributed.wrap_model(model, ctx), optimizer, scaler, amp_dtype, data_rng, pos, best, history,
                   state_every_steps, emit, final_dir=run if state is None else None)
        if ctx.is_main:
            try:
                loop._write_run_files(fresh=state is None, model_config=model_config, preset=preset)
            except Exception as e:
                loop._failed(e)
                raise
        return loop

    # -- files ------------------------------------------------------------------------------------
    def _write_run_files(self, *, fresh: bool, model_config: ModelConfig, preset: str | None) -> None:
        run = self.run_dir
        if fresh:  # the hidden folder of a killed fresh run is garbage
            shutil.rmtree(run, ignore_errors=True)
        with writing(run):
            run.mkdir(parents=True, exist_ok=True)
        if fresh:
            copy_run_assets(self.data_dir, run)
        else:  # temp files of a killed session (atomic writes that never got renamed)
            for name in (STATE_FILE, "last.safetensors", "best.safetensors", "config.json", "metrics.jsonl",
                         "loss.png", "rng-rank*.pt"):
                for stale in run.glob(f".{name}.tmp-*"):
                    stale.unlink(missing_ok=True)
            remove_stale_temp_files(run / CACHE_DIR)
        self.regions = load_run_assets(run).regions
        self.lips = self.regions.get("lips")
        write_text_atomic(run / "config.json", json.dumps({
            "train": to_dict(self.config), "model": to_dict(model_config), "data": str(self.data_dir.resolve()),
            "preset": preset, "device": self.ctx.device, "world_size": self.ctx.world_size}, indent=2))
        # A fresh log for a new run (--overwrite must not append to an old run's); on resume the state's
        # history is the truth: epochs logged after the last saved state are run again.
        write_text_atomic(run / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in self.history))
        # TensorBoard steps count batches; a resumed session redoes the batches after the saved one, and a
        # fresh run (maybe --overwrite) hides every older event in the folder
        resumed_at = self._tb_step(self.pos.epoch, self.pos.step)
        self.writer = _tensorboard_writer(run, purge_step=0 if fresh else resumed_at + 1)

    def _tb_step(self, epoch: int, step: int) -> int:
        return (epoch - 1) * self.steps_per_epoch + step

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.train_clips) // self.config.batch_size)

    def _save_state(self, *, interrupted: bool = False) -> None:
        """Rank 0 writes ``state.pt``; every other rank writes its own generator states beside it."""
        if not self.ctx.is_main:
            self.rank_rng = save_rank_rng(self.run_dir, self.ctx.rank, self.pos, self.rank_rng)
        if not interrupted:  # every rank's file holds this boundary before state.pt names it
            barrier(self.ctx)
        if self.ctx.is_main:
            save_state(self.run_dir, model=self.model, optimizer=self.optimizer, scaler=self.scaler,
                       position=self.pos, best=self.best, history=self.history,
                       train_clips=[c.name for c in self.train_clips], config=to_dict(self.config),
                       model_config=to_dict(self.model.config), encoder_config=self.model.encoder_config)
        if self.final_dir is not None:
            self._publish()
            if not interrupted:  # from now on every rank writes into the renamed folder
                barrier(self.ctx)

    def _publish(self) -> None:
        """Rename a fresh run's hidden folder to its name (replacing an old run under --overwrite only now).

        Raises:
            OutputError: the rename failed.
        """
        final, self.final_dir = self.final_dir, None
        if final is None:
            return
        if self.ctx.is_main:
            old = final.with_name(f".{final.name}.old-partial")
            if self.writer is not None:  # TensorBoard reopens its event file by path at every flush
                self.writer.close()
            try:
                if final.exists():
                    os.replace(final, old)
                os.replace(self.run_dir, final)
            except OSError as e:
                raise OutputError(f"{final}: cannot rename the new run folder {self.run_dir} to it ({e.strerror}); "
                                  "the run is complete there") from e
            shutil.rmtree(old, ignore_errors=True)
            if self.writer is not None:
                self.writer = _tensorboard_writer(final, purge_step=None)
        cache = self.model.audio_encoder.feature_cache
        if cache is not None and cache.folder is not None:  # every rank: the disk tier moved with the folder
            cache.folder = final / CACHE_DIR
        self.run_dir = final

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        start = self.pos
        self.emit({"event": "start", "epochs": self.config.epochs, "steps_per_epoch": self.steps_per_epoch,
                   "device": self.ctx.device, "start_epoch": start.epoch, "start_step": start.step,
                   "num_train_clips": len(self.train_clips), "tensorboard": self.writer is not None,
                   "world_size": self.ctx.world_size})
        try:
            while self.pos.epoch <= self.config.epochs:
                self._epoch()
        except KeyboardInterrupt:
            raise self._interrupted() from None
        except Exception as e:
            self._failed(e)
            raise
        finally:
            if self.writer is not None:
                self.writer.close()
        files = {name: self.run_dir / f"{name}.safetensors" for name in ("best", "last")}
        return TrainResult(self.run_dir, history=list(self.history),
                           best_path=files["best"] if files["best"].is_file() else None,
                           last_path=files["last"] if files["last"].is_file() else None,
                           num_train_clips=len(self.train_clips), num_val_clips=len(self.val_clips))

    def _epoch(self) -> None:
        epoch, size = self.pos.epoch, self.config.batch_size
        if self.pos.order is None:
            order = list(range(len(self.train_clips)))
            self.data_rng.shuffle(order)
            self.pos = Position(epoch, 0, self.pos.global_step, order, [], capture_rng(self.data_rng))
        order = self.pos.order
        batches = [order[i:i + size] for i in range(0, len(order), size)]
        t0, clips = time.perf_counter(), 0
        losses = list(self.pos.epoch_losses)
        for step in range(self.pos.step, self.steps_per_epoch):
            infos = [self.train_clips[i] for i in batches[step]]
            last_micro = (step + 1) % self.config.grad_accum == 0 or step + 1 == self.steps_per_epoch
            losses.append(self._forward_backward(infos, sync=last_micro))
            clips += len(infos)
            if last_micro:
                with deferred_interrupt():  # the update and the position that records it go together
                    self._optimizer_step()
                    self.pos = Position(epoch, step + 1, self.pos.global_step + 1, order, list(losses),
                                        capture_rng(self.data_rng))
                if self.state_every_steps and self.pos.global_step % self.state_every_steps == 0:
                    self._save_state()
            if self.writer is not None:
                self.writer.add_scalar("train/loss", losses[-1], self._tb_step(epoch, step + 1))
            self.emit({"event": "step", "epoch": epoch, "step": step + 1, "loss": losses[-1], "clips": len(infos)})
        train_seconds = time.perf_counter() - t0
        record: dict[str, Any] = {"epoch": epoch, "train_loss": float(np.mean(self.pos.epoch_losses))}
        if self.val_clips:
            self.emit({"event": "validate", "epoch": epoch})
            if self.ctx.is_main:
                record.update(evaluate_clips(self.model, self.dataset, self.val_clips, self.config, self.lips,
                                             self.ctx.device, regions=self.regions))
            barrier(self.ctx)  # the other ranks wait for rank 0's validation
        record["seconds"] = time.perf_counter() - t0
        record["clips_per_s"] = clips / train_seconds if clips and train_seconds > 0 else None
        score = record["val_loss"] if record.get("val_loss") is not None else record["train_loss"]
        if self.ctx.is_main:
            self._write_epoch_files(record, better=score <= self.best)
        with deferred_interrupt():
            self.history.append(record)
            self.best = min(self.best, score)
            self.pos = Position(epoch + 1, 0, self.pos.global_step, None, [], capture_rng(self.data_rng))
        self._save_state()
        cache = self.model.audio_encoder.feature_cache
        self.emit({"event": "epoch", **record,
                   "feature_cache": None if cache is None else cache.stats.to_dict()})
        self._check_lip_sync()

    def _check_lip_sync(self) -> None:
        """Warn (a ``warning`` event; ``train`` turns it into a ``RuntimeWarning`` when nobody listens), once per
        kind and session, when validation says the model is not learning lip sync (``talkface.train.diagnostics``)."""
        found = lip_sync_warning(self.history, lr=self.config.lr) if self.ctx.is_main else None
        if found is None or found[0] in self.warned:
            return
        kind, message = found
        self.warned.add(kind)
        self.emit({"event": "warning", "kind": kind, "epoch": self.history[-1]["epoch"], "message": message})

    def _forward_backward(self, infos: list[Any], *, sync: bool) -> float:
        """Loss and gradients of this rank's share of a global batch; returns the global batch's mean loss."""
        device, ctx = self.ctx.device, self.ctx
        mine, weight = shard_batch(infos, ctx.rank, ctx.world_size)
        batch = pad_batch([self.dataset.load_clip(i) for i in mine], list(self.model.config.speakers))
        gt, lengths = batch.vertices.to(device), batch.num_frames.to(device)
        no_sync = self.net.no_sync() if ctx.enabled and not sync else contextlib.nullcontext()
        with no_sync:
            with _autocast(self.amp_dtype):
                out = self.net(batch.audio.to(device), batch.audio_lengths.to(device), batch.template.to(device),
                               batch.style.to(device), lengths, teacher=gt if self.config.teacher_forcing else None)
            # outside autocast: the soft-DTW recursion needs float32 (exp of differences over gamma)
            loss = sequence_loss(out.vertices.float(), gt, lengths, self.config)
            scaled = loss if weight == 1.0 else loss * weight
            scaled = scaled / self.config.grad_accum
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        value = float(loss.detach())
        if ctx.enabled:
            value = sum_across(value * len(mine) if weight else 0.0, ctx) / len(infos)
        return value

    def _optimizer_step(self) -> None:
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _write_epoch_files(self, record: dict[str, Any], *, better: bool) -> None:
        extra = {"epoch": record["epoch"], "train": to_dict(self.config),
                 **{k: v for k, v in record.items() if v is not None}}
        save_checkpoint(self.run_dir / "last.safetensors", self.model, extra=extra)
        if better:
            save_checkpoint(self.run_dir / "best.safetensors", self.model, extra=extra)
        # rewritten whole rather than appended: on a full disk an append could leave half a line behind
        write_text_atomic(self.run_dir / "metrics.jsonl",
                          "".join(json.dumps(h) + "\n" for h in [*self.history, record]))
        write_loss_plot(self.run_dir / "loss.png", [*self.history, record])
        if self.writer is not None:
            at = self._tb_step(record["epoch"] + 1, 0)
            self.writer.add_scalar("train/epoch_loss", record["train_loss"], at)
            for key in ("val_loss", "val_lve", "val_mve", "val_lip_corr", "val_opening_range"):
                if record.get(key) is not None:
                    self.writer.add_scalar(f"val/{key[4:]}", record[key], at)
            self.writer.flush()

    def _interrupted(self) -> InterruptedRun:
        """Save the state at the last finished optimizer step and ``last.safetensors``; the error to raise."""
        pos = self.pos
        if self.ctx.is_main:
            save_checkpoint(self.run_dir / "last.safetensors", self.model,
                            extra={"epoch": pos.epoch, "step": pos.step, "interrupted": True,
                                   "train": to_dict(self.config)})
        self._save_state(interrupted=True)  # no barrier: the other ranks may be stopping elsewhere
        run = self.run_dir
        command = self._resume_command()
        return InterruptedRun(f"training stopped at epoch {pos.epoch} step {pos.step}; state saved in "
                              f"{run / STATE_FILE}; resume with: {command}")

    def _resume_command(self) -> str:
        return f"talkface train {shlex.quote(str(self.data_dir))} --out {shlex.quote(str(self.run_dir))} --resume"

    def _failed(self, error: Exception) -> None:
        """After an error: a fresh run that never saved a state is deleted (its hidden folder: nothing
        half-made is left, an old run replaced by --overwrite is kept); a run with a saved state is kept, and
        a TalkfaceError gets the command that resumes it."""
        if self.final_dir is not None:
            if self.ctx.is_main:
                if self.writer is not None:
                    self.writer.close()
                    self.writer = None
                shutil.rmtree(self.run_dir, ignore_errors=True)
            if isinstance(error, OutputError):  # name the run folder the user chose, not its hidden twin
                error.args = (str(error).replace(str(self.run_dir), str(self.final_dir)),)
            return
        if not (self.run_dir / STATE_FILE).is_file():
            return
        if isinstance(error, TalkfaceError) and not isinstance(error, InterruptedRun):
            error.args = (f"{error}; the run keeps its last saved state: fix the cause and resume with: "
                          f"{self._resume_command()}",)


def make_feature_cache(config: TrainConfig, run: Path) -> Any:
    """The run's CNN feature cache (memory bound and ``RUN/feature_cache/``), or None when both tiers are off."""
    if config.feature_cache_mb <= 0 and not config.feature_cache_disk:
        return None
    return FeatureCache(int(config.feature_cache_mb * 2**20), run / CACHE_DIR if config.feature_cache_disk else None)


def _amp_setup(config: TrainConfig, device: str) -> tuple[Any, Any]:
    """(autocast dtype or None, float16 GradScaler or None): bfloat16 where the GPU supports it."""
    if not config.amp:
        return None, None
    import torch

    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    if hasattr(torch.amp, "GradScaler"):  # torch >= 2.3
        return torch.float16, torch.amp.GradScaler("cuda")
    return torch.float16, torch.cuda.amp.GradScaler()


def _autocast(dtype: Any) -> Any:
    if dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type="cuda", dtype=dtype)


def _tensorboard_writer(run: Path, *, purge_step: int | None) -> Any:
    """A SummaryWriter on ``RUN/tensorboard`` (events at ``purge_step`` and later from an earlier session
    are hidden: they are run again), or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(run / "tensorboard"), purge_step=purge_step)
