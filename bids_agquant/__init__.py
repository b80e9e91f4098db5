"""bids_agquant: quantitative MRI of gadolinium nanoparticles in brain metastases (BIDS-App)."""
import os as _os
from importlib.metadata import PackageNotFoundError, version as _version

# ANTs registration is deterministic only with one ITK thread, and ITK reads this variable once,
# at its first use in a process (worker processes forked later inherit that state). Set it as
# soon as the package is imported, before anything can touch ITK.
_os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")

try:
    __version__ = _version("bids_agquant")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
