"""bids_agquant: quantitative MRI of gadolinium nanoparticles in brain metastases (BIDS-App)."""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("bids_agquant")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
