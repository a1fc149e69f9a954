"""Training diagnostics: tell a model that learns lip sync from one that does not (issue #27).

The loss and LVE alone do not tell a static face from a talking one: a model that predicts the mean face,
or an average mouth motion that ignores the audio, can still lower both. Each validation pass therefore
also records the lip-opening correlation and the opening range (``talkface.evaluate.metrics``), and
``lip_sync_warning`` reads them after the first ``SETTLE_EPOCHS`` epochs:

- **static**: the predicted lip opening's range is below ``MIN_OPENING_RANGE`` of the truth's: the face
  barely moves;
- **out of sync**: the correlation is below ``MIN_LIP_CORR`` while the training loss has fallen below
  its first epoch's: the model learns something (an average motion), but not the mouth's timing.

Pure functions of the epoch records; the loop emits the message as a ``warning`` event (the CLI prints
it) and logs it.
"""

from __future__ import annotations

import math
from typing import Any

SETTLE_EPOCHS = 3  # no verdict before this many epochs: the zero-initialised head starts static
MIN_OPENING_RANGE = 0.2  # predicted / true lip-opening range below which the face "barely moves"
MIN_LIP_CORR = 0.2  # lip-opening correlation below which the mouth does not follow the speech

_CAUSES = ("a learning rate too low (or too high) or too few epochs (--lr, --epochs); an encoder that does not hear "
           "the speech (random-init, frozen, or not the one the features were made for: --encoder); the dataset's "
           "fps or templates not those of the motion (check `talkface prepare`'s --fps and the templates file); audio "
           "and motion misaligned or mismatched in the data (a clip's audio paired with another clip's motion, "
           "or a constant offset)")


def _number(record: dict[str, Any], key: str) -> float | None:
    value = record.get(key)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def lip_sync_warning(history: list[dict[str, Any]], lr: float | None = None) -> tuple[str, str] | None:
    """(kind, message) when the last epoch's validation says the model is not learning lip sync, else None.

    Args:
        history: the epoch records so far (``epoch``, ``train_loss``, ``val_lip_corr``,
            ``val_opening_range``; the last one is judged).
        lr: the run's learning rate, named in the message.

    Returns:
        ``("static", message)``, ``("out_of_sync", message)`` or None (also before ``SETTLE_EPOCHS``
        epochs and without validation measures).
    """
    if not history or int(history[-1].get("epoch", 0)) < SETTLE_EPOCHS:
        return None
    last, first = history[-1], history[0]
    epoch = int(last["epoch"])
    at = f"after {epoch} epochs" + (f" (lr {lr:g})" if lr is not None else "")
    ratio = _number(last, "val_opening_range")
    if ratio is not None and ratio < MIN_OPENING_RANGE:
        return "static", (
            f"the predicted lips barely move: on the validation clips the lip opening's range is {ratio:.2f} of "
            f"the ground truth's {at} (expected >= {MIN_OPENING_RANGE}). Likely causes: {_CAUSES}. Try a higher "
            "--lr (the demo trains at 3e-4), fine-tune the encoder with a pretrained one, and check the data "
            "with `talkface evaluate` and a rendered clip.")
    corr = _number(last, "val_lip_corr")
    loss0, loss = _number(first, "train_loss"), _number(last, "train_loss")
    fallen = loss0 is not None and loss is not None and loss < loss0
    if corr is not None and corr < MIN_LIP_CORR and fallen:
        return "out_of_sync", (
            f"the predicted mouth does not follow the speech: the lip-opening correlation with the ground truth "
            f"is {corr:.2f} on the validation clips {at} (expected >= {MIN_LIP_CORR}) while the training loss "
            f"fell from {loss0:.4g} to {loss:.4g}: the model learns an average motion, not lip sync. Likely "
            f"causes: {_CAUSES}. Try checking that each clip's audio belongs to its motion (play a prepared "
            "clip against its render), the fps, and the encoder.")
    return None
