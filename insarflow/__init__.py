"""insarflow: Sentinel-1 InSAR time series as one reliable dataflow.

Everything installed lives under this one import namespace. The stage code keeps the
project's top-level folders: ``flows/``, ``tasks/`` and ``deployments/`` are linked here as
``insarflow.flows`` (Prefect flows that only compose), ``insarflow.tasks`` (one module per
stage: plain typed functions and thin task wrappers) and ``insarflow.deployments`` (work
pool and limit setup). Beside them: the configuration model (:mod:`insarflow.config`), the
command line (:mod:`insarflow.cli`), the compute and execution engine, and the simulator
(:mod:`insarflow.simulator`, a stand-in for ISCE2 used by the demo and the tests; not
production code).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("insarflow")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from insarflow.logs import send_to_run_log

# Before any stage module imports Prefect, which reads the setting when it sets up logging.
send_to_run_log()
