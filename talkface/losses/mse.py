"""Frame-wise mean squared error over the valid (unpadded) frames of a batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from talkface.errors import ConfigError


def masked_mse(
    pred: torch.Tensor, target: torch.Tensor, lengths: Sequence[int] | torch.Tensor | None = None
) -> torch.Tensor:
    """Mean of ``(pred - target)²`` over the valid frames and the feature axis.

    Without padding this is exactly FaceFormer's ``nn.MSELoss()`` (a mean over every element).

    Args:
        pred, target: (B, T, D) float tensors, e.g. vertices flattened to D = V·3, metres.
        lengths: (B,) integer valid frame counts (1..T); None means every frame is valid.

    Returns:
        Scalar tensor (m² for vertices), in ``pred``'s dtype.

    Raises:
        ConfigError: shapes differ, are not (B, T, D), or lengths do not fit.
    """
    if pred.shape != target.shape or pred.dim() != 3:
        raise ConfigError(
            f"masked_mse: pred and target must be (B, T, D) tensors of one shape; "
            f"got {tuple(pred.shape)} and {tuple(target.shape)}."
        )
    squared = (pred - target).square()
    if lengths is None:
        return squared.mean()
    batch, frames, dim = pred.shape
    valid = torch.as_tensor(lengths, device=pred.device)
    if valid.shape != (batch,) or valid.is_floating_point() or valid.dtype == torch.bool:
        raise ConfigError(f"masked_mse: lengths must be a ({batch},) integer tensor; got {tuple(valid.shape)}.")
    if batch and (int(valid.min()) < 1 or int(valid.max()) > frames):
        raise ConfigError(f"masked_mse: lengths must lie in [1, {frames}]; got {valid.tolist()}.")
    mask = torch.arange(frames, device=pred.device).unsqueeze(0) < valid.unsqueeze(1)  # (B, T)
    total = (squared.sum(dim=2) * mask).sum()
    return total / (valid.sum() * dim).to(squared.dtype)
