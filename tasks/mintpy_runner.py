"""``smallbaselineApp.py`` with this project's fixes for MintPy 1.6, run in MintPy's own process.

:mod:`insarflow.tasks.sbas` runs ``python -m insarflow.tasks.mintpy_runner <smallbaselineApp
arguments>``. Each patch below names what it changes and why; ``tests/sbas/test_mintpy_patches.py``
holds one canary per patch that fails when the installed MintPy no longer does what the patch
relies on (then the patch is to be revisited, and the upper bound on mintpy in pyproject.toml
with it).
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: The seed of the automatic reference point (see :func:`seed_reference_point`).
REFERENCE_POINT_SEED = 0
#: Environment variable with the address of an existing Dask scheduler on which MintPy's
#: parallel steps run (see :func:`scheduler_cluster`); set by the sbas stage from
#: ``compute.scheduler_address``.
SCHEDULER_ENV = "INSARFLOW_DASK_SCHEDULER"


def seed_reference_point() -> None:
    """MintPy's automatic reference point is a pixel drawn with Python's unseeded ``random``
    (``reference_point.random_select_reference_yx``), so two runs on the same data (or a run
    resumed after a kill) would give products relative to different pixels; a fixed seed
    makes the choice reproducible."""
    random.seed(REFERENCE_POINT_SEED)


def local_only_cluster(work_dir: Path) -> None:
    """MintPy's local Dask cluster (``LocalCluster()`` with Dask's defaults, imported when the
    cluster opens) gets its scratch space under the MintPy directory and listens on this
    machine only."""
    import dask.distributed

    distributed: Any = dask.distributed  # MintPy imports LocalCluster from here when it opens
    base: Any = distributed.LocalCluster
    scratch = str(work_dir / "dask-scratch")

    class LocalCluster(base):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("host", "127.0.0.1")
            kwargs.setdefault("dashboard_address", "127.0.0.1:0")
            kwargs.setdefault("local_directory", scratch)
            super().__init__(*args, **kwargs)

    distributed.LocalCluster = LocalCluster


def scheduler_cluster(address: str) -> None:
    """MintPy's parallel steps (ifgram_inversion, dem_error) run their chunks on the workers of
    the existing scheduler at ``address`` instead of a cluster MintPy starts.

    MintPy's ``DaskCluster`` starts a cluster of ``mintpy.compute.cluster``'s type, scales it,
    and closes it afterwards; here, for type ``local``, it connects a client to ``address``,
    scales nothing and closes only its client (the scheduler and its workers are not its own).
    ``numWorker`` (the number of chunks MintPy splits each box into) becomes the total of the
    scheduler's worker threads when the step starts, at least 2: with one chunk MintPy turns
    Dask off and inverts in its own process.
    """
    from dask.distributed import Client
    from mintpy.objects import cluster

    base: Any = cluster.DaskCluster

    class SchedulerCluster(base):
        num_worker: int  # the number of chunks (set by DaskCluster.__init__)

        @staticmethod
        def format_num_worker(cluster_type: str | None, num_worker: str) -> int:
            if cluster_type != "local":
                return int(base.format_num_worker(cluster_type, num_worker))
            with Client(address) as client:
                threads = sum(client.nthreads().values())
            if not threads:
                raise RuntimeError(
                    f"the Dask scheduler at {address} (compute.scheduler_address) has no "
                    f"workers: start some with 'dask worker {address}'"
                )
            return max(threads, 2)

        def open(self) -> None:
            print(f"connect to the Dask scheduler at {address}")
            self.client = Client(address)

        def run(self, func: Any, func_data: dict[str, Any], results: list[Any]) -> Any:
            # DaskCluster.run without scaling a cluster or opening a second client
            box = func_data["box"]
            sub_boxes, num_split = cluster.split_box2sub_boxes(
                box, num_split=self.num_worker, dimension="x"
            )
            self.num_worker = num_split
            print(f"split patch into {num_split} sub boxes in x direction for workers")
            futures, submitted = self.submit_job(func, func_data, sub_boxes)
            return self.collect_result(futures, results, box, submitted)

        def close(self) -> None:
            self.client.close()

    cluster.DaskCluster = SchedulerCluster


def skip_empty_ambiguity_histogram() -> None:
    """quick_overview plots the histogram of ``numTriNonzeroIntAmbiguity.h5`` with
    ``bins=max(data)``, which raises when no triplet has an unwrapping error (after the file
    is written): without such a triplet there is nothing to plot."""
    import numpy as np
    from mintpy.utils import plot, readfile

    original = plot.plot_num_triplet_with_nonzero_integer_ambiguity

    def plot_if_any(fname: str, *args: Any, **kwargs: Any) -> Any:
        if not np.any(np.nan_to_num(readfile.read(fname)[0]) > 0):
            print("no triplet with a non-zero integer ambiguity: histogram plot skipped")
            return None
        return original(fname, *args, **kwargs)

    plot.plot_num_triplet_with_nonzero_integer_ambiguity = plot_if_any


def no_bridge_for_one_region() -> None:
    """Bridging finds no region boundary when an interferogram's connected components are one
    region covering the whole image and fails with an ``IndexError``; with one region there
    is nothing to bridge."""
    from mintpy.objects import conncomp

    original = conncomp.connectComponent.find_mst_bridge

    def find_mst_bridge(self: Any) -> Any:
        if getattr(self, "numLabel", 2) <= 1:
            self.bridges, self.num_bridge = [], 0
            return self.bridges
        return original(self)

    conncomp.connectComponent.find_mst_bridge = find_mst_bridge


def apply_patches(argv: Sequence[str]) -> None:
    """Install the patches the smallbaselineApp run ``argv`` needs."""
    seed_reference_point()
    if "--dir" in argv:
        local_only_cluster(Path(argv[list(argv).index("--dir") + 1]))
    if address := os.environ.get(SCHEDULER_ENV):
        scheduler_cluster(address)
    if "quick_overview" in argv:
        skip_empty_ambiguity_histogram()
    if "correct_unwrap_error" in argv:
        no_bridge_for_one_region()


def main(argv: Sequence[str]) -> None:
    from mintpy.cli.smallbaselineApp import main as smallbaseline_app

    apply_patches(argv)
    smallbaseline_app(list(argv))


# Dask workers (mintpy.compute.cluster = local) re-import the main module: patch and run only
# in the main process.
if __name__ == "__main__":
    main(sys.argv[1:])
