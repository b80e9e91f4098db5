"""The brain and signal masks moved to :mod:`bids_agquant.qmri.masks` (pure arrays).

Kept as a name because the brain-mask sidecar's ``Method`` points here (its text is part of the
outputs and stays as it was).
"""
from bids_agquant.qmri.masks import (TISSUE_T1_RANGE_S, brain_mask_from_t1,  # noqa: F401
                                     brain_mask_from_t1w, signal_mask)

__all__ = ["brain_mask_from_t1", "brain_mask_from_t1w", "signal_mask", "TISSUE_T1_RANGE_S"]
