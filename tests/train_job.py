"""A tiny training job shared by the resume and distributed tests, runnable as a script so that a test
can SIGKILL it or launch it under ``torch.distributed.run``.

    python tests/train_job.py DATA RUN '{"epochs": 3, "resume": false, "state_every_steps": 1}'

The recipe (``tiny_config``/``tiny_kwargs``) is the same in the test process and in the job, and the job
pins torch to one thread, so a run's weights do not depend on where it ran.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SPLITS = """[train]
speakers = ["SynthTalk_01", "SynthTalk_02"]
sentences = [1, 2]
[val]
speakers = ["SynthTalk_01"]
sentences = [3, 3]
[test]
speakers = ["SynthTalk_02"]
sentences = [3, 3]
"""


def make_tiny_data(root: Path) -> Path:
    """4 train clips (2 speakers x 2 sentences), 1 val clip, at 10 fps (about 25 frames each)."""
    from talkface.data import prepare_vocaset
    from talkface.synthetic import write_synthetic_vocaset

    write_synthetic_vocaset(root / "raw", num_speakers=2, num_sentences=3, use_espeak=False)
    (root / "splits.toml").write_text(SPLITS)
    prepare_vocaset(root / "raw", root / "data", fps=10, splits=root / "splits.toml")
    return root / "data"


def tiny_config(**changes: Any) -> Any:
    from talkface.config import TrainConfig

    values = {"epochs": 3, "lr": 1e-3, "band": 2, "batch_size": 1, "encoder": "tiny", "seed": 3, **changes}
    return TrainConfig(**values)


def tiny_kwargs(dropout: bool = True) -> dict[str, Any]:
    """Keyword arguments of ``train`` for the tiny model (D 16); ``dropout=False`` switches off every
    random part (dropout, SpecAugment, layerdrop) so that different batchings can be compared."""
    from talkface.model import tiny_encoder_config

    if dropout:
        return {"encoder_config": tiny_encoder_config(), "model_overrides": {"feature_dim": 16}, "device": "cpu"}
    off = {k: 0.0 for k in ("hidden_dropout", "attention_dropout", "activation_dropout", "feat_proj_dropout",
                            "final_dropout", "mask_time_prob", "layerdrop")}
    return {"encoder_config": tiny_encoder_config(**off), "model_overrides": {"feature_dim": 16, "dropout": 0.0},
            "device": "cpu"}


def main(argv: list[str]) -> None:
    import torch

    from talkface.train import train

    torch.set_num_threads(1)
    data, run, options = Path(argv[0]), Path(argv[1]), json.loads(argv[2])
    config = tiny_config(**options.get("config", {}))
    train(data, run, config, resume=options.get("resume", False), overwrite=options.get("overwrite", False),
          state_every_steps=options.get("state_every_steps"), on_progress=_killer(options.get("kill_group_at_step")),
          **tiny_kwargs(options.get("dropout", True)))


def _killer(global_step: int | None) -> Any:
    """An on_progress (rank 0) that SIGKILLs torchrun and every rank (Linux: via /proc) once the
    state of optimizer step ``global_step`` is saved: a deterministic "power cut" in the middle of a run."""
    import os
    import signal

    per_epoch: list[int] = []

    def on_progress(event: dict[str, Any]) -> None:
        if event["event"] == "start":
            per_epoch.append(event["steps_per_epoch"])
        elif global_step and event["event"] == "step" and \
                (event["epoch"] - 1) * per_epoch[0] + event["step"] >= global_step:
            launcher = os.getppid()  # torchrun, whose workers each run in their own process group
            ranks = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
            os.kill(launcher, signal.SIGKILL)
            for pid in sorted(map(int, ranks), key=lambda p: p == os.getpid()):  # this rank last
                os.kill(pid, signal.SIGKILL)

    return on_progress


if __name__ == "__main__":
    main(sys.argv[1:])
