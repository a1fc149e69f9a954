"""Training losses: soft-DTW (the paper's loss) and the frame-wise masked MSE.

Imports torch; import this package lazily from code that ``talkface --help`` may load.
"""

from talkface.losses.mse import masked_mse
from talkface.losses.softdtw import SoftDTWLoss, band_mask, soft_dtw

__all__ = ["soft_dtw", "SoftDTWLoss", "band_mask", "masked_mse"]
