"""insarflow stage modules: plain typed functions plus thin Prefect task wrappers."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("insarflow")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
