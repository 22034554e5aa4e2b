"""Resource class and memory estimate of each topsStack run-file line.

Resource classes (used as Dask worker resources / Prefect tags), per step in the
registry (:attr:`insarflow.tasks.topsstack.steps.Step.resource_class`):

* ``gpu``: topo (``unpack_topo_reference``) and geo2rdr (``overlap_geo2rdr``,
  ``fullBurst_geo2rdr``) when ``--useGPU`` is set; ``cpu`` otherwise.
* ``memory-heavy``: resampling, merges, ``filter_coherence`` and the snaphu
  unwrapping steps (``unwrap``, ``unwrap_ion``), the usual OOM step.
* ``cpu``: everything else.

Memory model (MB), per step in the registry (:attr:`~insarflow.tasks.topsstack.steps.Step.memory`):
``base + n_bursts * (full + looked * 27 / (range_looks * azimuth_looks))``: *full* is the
per-burst cost of work done at full resolution (independent of looks), *looked* the
per-burst cost at the default 9 x 3 looks, scaled by the number of multilooked pixels.
Public anchors:

* MinSAR budgets snaphu unwrapping at about 2,000 MB + 300 MB per burst at topsStack's
  default looks (9 x 3); that is the ``unwrap`` entry.
* HyP3 (hyp3-isce2 burst jobs) sizes and caps its jobs by number of bursts and looks:
  memory grows with bursts and shrinks with looks.
* A full-resolution IW burst is about 1,500 lines x 21,000 samples, i.e. ~250 MB as
  complex64: burst-by-burst steps (geo2rdr, resample, burst interferograms) need a
  few such arrays regardless of the burst count.
* Geometry-layer merges write multilooked float rasters and stay small.

The ionosphere steps work at the fixed looks of the ionosphere parameter file, not at
``range_looks x azimuth_looks``, so their cost is in the *full* column.
"""

from __future__ import annotations

import math

from insarflow.tasks.topsstack import steps
from insarflow.tasks.topsstack.steps import ResourceClass

# The classes operators cap with Prefect tag concurrency limits (deployments/setup.py).
LIMITED_CLASSES: frozenset[ResourceClass] = frozenset({"gpu", "memory-heavy"})

DEFAULT_LOOKS = 9 * 3  # topsStack's default range x azimuth looks


def resource_class(step: str, use_gpu: bool) -> ResourceClass:
    """``gpu``, ``memory-heavy`` or ``cpu`` for a run-file step (see the module doc)."""
    declared = steps.get(step).resource_class
    if declared == "gpu" and not use_gpu:
        return "cpu"
    return declared


def estimate_memory_mb(
    step: str, key_kind: str, n_bursts: int, range_looks: int, azimuth_looks: int
) -> int:
    """Peak memory (MB) of one line of ``step`` over ``n_bursts`` bursts (module doc)."""
    model = steps.get(step).memory_for(key_kind)
    if n_bursts < 1:
        raise ValueError(f"n_bursts={n_bursts} must be >= 1")
    if range_looks < 1 or azimuth_looks < 1:
        raise ValueError(
            f"range_looks={range_looks}, azimuth_looks={azimuth_looks}: looks must be >= 1"
        )
    scale = DEFAULT_LOOKS / (range_looks * azimuth_looks)
    return math.ceil(
        model.base_mb + n_bursts * (model.full_mb_per_burst + model.looked_mb_per_burst * scale)
    )
