"""Digital phantom of the NanoRad AGuIX protocol: a raw BIDS dataset with known ground truth.

>>> from bids_agquant.simulate import simulate_dataset, load_truth
>>> truth = simulate_dataset("/tmp/phantom", preset="small", seed=1)   # doctest: +SKIP
>>> truth.lesion_table("01")                                            # doctest: +SKIP

Command line: ``bids-agquant-simulate OUT [--preset small|sample|clinical] [options]``.
"""
from .config import PRESETS, PhantomConfig, SessionSpec, default_sessions, make_config
from .dataset import simulate_dataset
from .truth import Truth, load_truth

__all__ = ["simulate_dataset", "load_truth", "Truth", "PhantomConfig", "SessionSpec", "PRESETS",
           "make_config", "default_sessions"]
