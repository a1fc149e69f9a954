"""Training on a tiny prepared dataset: the run folder is complete and re-loadable, --overwrite starts a
fresh log, and a non-empty run folder is refused. (The overfit-per-loss test belongs to issue 7.)"""

import json

import numpy as np
import pytest

from talkface.config import TrainConfig
from talkface.errors import OutputError


def test_train_writes_a_complete_run(tiny_data, tmp_path):
    from talkface.model import tiny_encoder_config
    from talkface.model.checkpoint import load_checkpoint
    from talkface.train import train

    config = TrainConfig(epochs=3, lr=3e-4, band=2, batch_size=2, encoder="tiny")
    result = train(tiny_data, tmp_path / "run", config, encoder_config=tiny_encoder_config(), device="cpu")
    losses = [h["train_loss"] for h in result.history]
    assert np.isfinite(losses).all() and len(losses) == 3
    for name in ("best.safetensors", "last.safetensors", "config.json", "metrics.jsonl", "loss.png", "templates.npz"):
        assert (tmp_path / "run" / name).is_file(), name
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(1, 4))
    model, meta = load_checkpoint(tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert model.config.speakers == tuple(saved["model"]["speakers"])
    assert np.isfinite(meta["extra"]["train_loss"])

    with pytest.raises(OutputError, match="not empty"):
        train(tiny_data, tmp_path / "run", config, encoder_config=tiny_encoder_config(), device="cpu")
    again = train(tiny_data, tmp_path / "run", TrainConfig(epochs=1, encoder="tiny"),
                  encoder_config=tiny_encoder_config(), device="cpu", overwrite=True)
    assert len(again.history) == 1
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1


def test_progress_events_and_epoch_records(tiny_data, tmp_path):
    from talkface.model import tiny_encoder_config
    from talkface.train import train

    events: list[dict] = []
    config = TrainConfig(epochs=2, lr=3e-4, band=2, encoder="tiny")
    result = train(tiny_data, tmp_path / "run", config, encoder_config=tiny_encoder_config(), device="cpu",
                   model_overrides={"feature_dim": 16}, on_progress=events.append)
    start = events[0]
    assert start["event"] == "start"
    assert {k: start[k] for k in ("epochs", "steps_per_epoch", "device", "start_epoch", "start_step",
                                  "num_train_clips")} == {"epochs": 2, "steps_per_epoch": 1, "device": "cpu",
                                                          "start_epoch": 1, "start_step": 0, "num_train_clips": 1}
    assert isinstance(start["tensorboard"], bool)
    kinds = [e["event"] for e in events[1:]]
    assert kinds == ["step", "validate", "epoch"] * 2  # "validate" comes before the val loop's work
    step = events[1]
    assert (step["epoch"], step["step"], step["clips"]) == (1, 1, 1) and np.isfinite(step["loss"])
    for record in result.history:
        assert record["clips_per_s"] > 0 and record["seconds"] > 0
    assert [e["train_loss"] for e in events if e["event"] == "epoch"] == [h["train_loss"] for h in result.history]
    assert (tmp_path / "run" / "state.pt").is_file()


def test_amp_needs_cuda(tiny_data, tmp_path):
    from talkface.errors import ConfigError
    from talkface.model import tiny_encoder_config
    from talkface.train import train

    with pytest.raises(ConfigError, match="--amp needs CUDA"):
        train(tiny_data, tmp_path / "run", TrainConfig(epochs=1, amp=True, encoder="tiny"),
              encoder_config=tiny_encoder_config(), device="cpu")
    assert not (tmp_path / "run").exists()


def test_tensorboard_event_files(tiny_data, tmp_path):
    pytest.importorskip("tensorboard")
    from talkface.model import tiny_encoder_config
    from talkface.train import train

    events: list[dict] = []
    train(tiny_data, tmp_path / "run", TrainConfig(epochs=1, encoder="tiny"), encoder_config=tiny_encoder_config(),
          device="cpu", model_overrides={"feature_dim": 16}, on_progress=events.append)
    assert events[0]["tensorboard"] is True
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.gpu
def test_amp_two_steps_on_cuda(tmp_path):
    import torch

    from talkface.train import train
    from talkface.train.state import load_state

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    import train_job

    data = train_job.make_tiny_data(tmp_path / "corpus")
    config = train_job.tiny_config(epochs=1, batch_size=2, amp=True)
    kwargs = {**train_job.tiny_kwargs(), "device": "cuda"}
    result = train(data, tmp_path / "run", config, **kwargs)
    assert np.isfinite(result.history[0]["train_loss"]) and np.isfinite(result.history[0]["val_loss"])
    state = load_state(tmp_path / "run")
    assert state["position"].global_step == 2
    more = train(data, tmp_path / "run", train_job.tiny_config(epochs=2, batch_size=2, amp=True), resume=True,
                 **kwargs)
    assert len(more.history) == 2 and np.isfinite(more.history[1]["train_loss"])


def test_make_optimizer_is_adam(tiny_model_config, tiny_encoder_config):
    """The (fused where available) optimizer makes the same updates as torch's default Adam."""
    import copy

    import torch

    from talkface.model import TalkFaceModel
    from talkface.train import make_optimizer

    torch.manual_seed(0)
    a = TalkFaceModel(tiny_model_config, tiny_encoder_config)
    b = copy.deepcopy(a)
    opt_a = make_optimizer(a, 1e-3)
    opt_b = torch.optim.Adam([p for p in b.parameters() if p.requires_grad], lr=1e-3, foreach=False)
    assert len(opt_a.param_groups[0]["params"]) == len(opt_b.param_groups[0]["params"])
    for step in range(3):
        g = torch.Generator().manual_seed(step)
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
            if pa.requires_grad:
                pa.grad = torch.randn(pa.shape, generator=g)
                pb.grad = pa.grad.clone()
        opt_a.step()
        opt_b.step()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-9, msg=name)
    frozen = [p for p in a.audio_encoder.wav2vec2.feature_extractor.parameters()]
    assert not any(p is q for p in frozen for q in opt_a.param_groups[0]["params"])


@pytest.mark.parametrize("fail_at_epoch, overwrite", [(1, False), (1, True), (2, False)])
def test_full_disk_leaves_no_half_made_run_but_keeps_a_resumable_one(tiny_data, tmp_path, monkeypatch, fail_at_epoch,
                                                                    overwrite):
    """A fresh run is built in a hidden folder and renamed at its first saved state: a full disk before that
    leaves nothing (and an old run under --overwrite untouched); later, the run keeps its saved state and the
    error says how to resume (issue 15)."""
    import errno

    import talkface.train.loop as loop
    from talkface.model import tiny_encoder_config
    from talkface.train import train

    real = loop.save_checkpoint

    def disk_fills(path, model, *, extra=None):
        if extra and extra.get("epoch") == fail_at_epoch:
            raise OutputError(f"{path}: cannot write ({errno.errorcode[errno.ENOSPC]}); choose a writable output "
                              "folder with free space")
        return real(path, model, extra=extra)

    monkeypatch.setattr(loop, "save_checkpoint", disk_fills)
    run = tmp_path / "run"
    if overwrite:
        run.mkdir()
        (run / "old.txt").write_text("the previous run")
    with pytest.raises(OutputError) as info:
        train(tiny_data, run, TrainConfig(epochs=3, band=2, encoder="tiny"), encoder_config=tiny_encoder_config(),
              device="cpu", overwrite=overwrite)
    if overwrite:
        assert [p.name for p in tmp_path.iterdir()] == ["run"] and [p.name for p in run.iterdir()] == ["old.txt"]
    elif fail_at_epoch == 1:
        assert not run.exists() and list(tmp_path.iterdir()) == []
    else:
        assert (run / "state.pt").is_file() and "--resume" in str(info.value)
        assert not [p for p in run.iterdir() if ".tmp-" in p.name]


# ------------------------------------------------------------------------------ training-loop properties (issue 20)
@pytest.fixture(scope="module")
def four_clips(tmp_path_factory):
    """4 train clips, 1 val clip (tests/train_job.py's corpus)."""
    import train_job

    return train_job.make_tiny_data(tmp_path_factory.mktemp("four"))


def _run(data, run, *, dropout=True, resume=False, **changes):
    """tests/train_job.py's recipe with ``changes``; ``dropout=False`` turns off every random part."""
    import train_job

    from talkface.train import train

    return train(data, run, train_job.tiny_config(**changes), resume=resume, **train_job.tiny_kwargs(dropout))


def _spy_optimizer_steps(monkeypatch) -> list[dict]:
    """Record, at every optimizer step, the gradient each parameter holds just before the update."""
    from talkface.train.loop import TrainLoop

    steps: list[dict] = []
    original = TrainLoop._optimizer_step

    def spy(self):
        steps.append({"epoch": self.pos.epoch, "grads": {n: p.grad.detach().clone()
                                                         for n, p in self.model.named_parameters()
                                                         if p.grad is not None}})
        original(self)

    monkeypatch.setattr(TrainLoop, "_optimizer_step", spy)
    return steps


def test_best_checkpoint_is_the_epoch_with_the_lowest_validation_loss(four_clips, tmp_path, monkeypatch):
    """Whatever order the validation losses come in, best.safetensors holds the epoch whose val_loss in
    metrics.jsonl is the lowest (scripted losses: the lowest is neither the first, the last nor the highest)."""
    import talkface.train.loop as loop_module
    from talkface.model.checkpoint import read_checkpoint_meta

    scripted = iter([2.0, 0.5, 3.0, 1.0])
    monkeypatch.setattr(loop_module, "evaluate_clips",
                        lambda *a, **k: {"val_loss": next(scripted), "val_lve": None, "val_mve": 0.0})
    run = tmp_path / "run"
    _run(four_clips, run, epochs=4)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    lowest = min(records, key=lambda r: r["val_loss"])
    extra = read_checkpoint_meta(run / "best.safetensors")["extra"]
    assert (extra["epoch"], extra["val_loss"]) == (lowest["epoch"], lowest["val_loss"]) == (2, 0.5)
    assert read_checkpoint_meta(run / "last.safetensors")["extra"]["epoch"] == 4


def test_accumulated_gradients_equal_one_batch_of_the_combined_size(four_clips, tmp_path, monkeypatch):
    """grad_accum k over batches of b gives the gradient of one batch of k*b clips (the loss is a mean over
    clips; Adam hides a k-times-too-large gradient in the weights, so the gradients themselves are compared)."""
    steps = _spy_optimizer_steps(monkeypatch)
    _run(four_clips, tmp_path / "accum", dropout=False, epochs=1, batch_size=1, grad_accum=2)
    accumulated = list(steps)
    steps.clear()
    _run(four_clips, tmp_path / "batch", dropout=False, epochs=1, batch_size=2, grad_accum=1)
    assert len(accumulated) == len(steps) == 2
    for acc, one in zip(accumulated, steps, strict=True):
        assert acc["grads"].keys() == one["grads"].keys()
        scale = max(float(g.abs().max()) for g in one["grads"].values())
        worst = max(float((acc["grads"][n] - g).abs().max()) for n, g in one["grads"].items())
        assert worst <= 1e-4 * scale, f"accumulated gradients differ by {worst:.3g} (largest gradient {scale:.3g})"


@pytest.mark.parametrize("grad_accum", [3, 4, 5])
def test_every_epoch_ends_with_an_optimizer_step(four_clips, tmp_path, monkeypatch, grad_accum):
    """4 batches per epoch: a trailing group smaller than grad_accum is stepped too, so no gradient crosses
    into the next epoch and each epoch makes ceil(4 / grad_accum) updates."""
    from talkface.train.loop import TrainLoop
    from talkface.train.state import load_state

    steps = _spy_optimizer_steps(monkeypatch)
    leftovers: list[list[str]] = []
    original = TrainLoop._epoch

    def checked(self):
        original(self)
        leftovers.append([n for n, p in self.model.named_parameters() if p.grad is not None])

    monkeypatch.setattr(TrainLoop, "_epoch", checked)
    _run(four_clips, tmp_path / "run", epochs=2, batch_size=1, grad_accum=grad_accum)
    per_epoch = -(-4 // grad_accum)
    assert leftovers == [[], []], "gradients left over at an epoch's end: its last group was never stepped"
    assert [s["epoch"] for s in steps] == [1] * per_epoch + [2] * per_epoch
    assert load_state(tmp_path / "run")["position"].global_step == 2 * per_epoch


class StubScaler:
    """A GradScaler stand-in for CPU: scale 1, counts its updates; its state is what a resume must restore."""

    def __init__(self) -> None:
        self.updates = 0
        self.scale_value = 1.0

    def scale(self, loss):
        return loss * self.scale_value

    def step(self, optimizer) -> None:
        optimizer.step()

    def update(self) -> None:
        self.updates += 1

    def is_enabled(self) -> bool:
        return True

    def state_dict(self) -> dict:
        return {"scale": self.scale_value, "_growth_tracker": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.scale_value, self.updates = float(state["scale"]), int(state["_growth_tracker"])


def test_grad_scaler_state_round_trips_through_resume(four_clips, tmp_path, monkeypatch):
    """A resumed run continues the scaler where it stopped: after 1 + 1 epochs of 4 steps it has counted
    8 updates, as an uninterrupted run does."""
    import talkface.train.loop as loop_module
    from talkface.train.state import load_state

    scalers: list[StubScaler] = []

    def setup(config, device):
        scalers.append(StubScaler())
        return None, scalers[-1]

    monkeypatch.setattr(loop_module, "_amp_setup", setup)
    run = tmp_path / "run"
    _run(four_clips, run, epochs=1)
    assert load_state(run)["scaler"] == {"scale": 1.0, "_growth_tracker": 4}
    _run(four_clips, run, epochs=2, resume=True)
    assert len(scalers) == 2 and scalers[1].updates == 8
    assert load_state(run)["scaler"] == {"scale": 1.0, "_growth_tracker": 8}
