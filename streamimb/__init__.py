"""streamimb: online detection of rare classes and anomalies on streams whose class prevalence shifts."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("streamimb")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
