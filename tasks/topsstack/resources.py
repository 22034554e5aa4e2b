"""Resource class and memory estimate of each topsStack run-file line.

Resource classes (used as Dask worker resources / Prefect tags):

* ``gpu``: topo (``unpack_topo_reference``) and geo2rdr (``overlap_geo2rdr``,
  ``fullBurst_geo2rdr``) when ``--useGPU`` is set; ``cpu`` otherwise.
* ``memory-heavy``: resampling (``overlap_resample``, ``fullBurst_resample``,
  ``subband_and_resamp``), merges (``merge_reference_secondary_slc``,
  ``merge_burst_igram``, ``mergeBurstsIon``), ``filter_coherence`` and the snaphu
  unwrapping steps (``unwrap``, ``unwrap_ion``), the usual OOM step.
* ``cpu``: everything else.

Memory model (MB), ``base + n_bursts * (full + looked * 27 / (range_looks *
azimuth_looks))``: *full* is the per-burst cost of work done at full resolution
(independent of looks), *looked* the per-burst cost at the default 9 x 3 looks,
scaled by the number of multilooked pixels. Public anchors:

* MinSAR budgets snaphu unwrapping at about 2,000 MB + 300 MB per burst at topsStack's
  default looks (9 x 3); that is the ``unwrap`` row.
* HyP3 (hyp3-isce2 burst jobs) sizes and caps its jobs by number of bursts and looks:
  memory grows with bursts and shrinks with looks.
* A full-resolution IW burst is about 1,500 lines x 21,000 samples, i.e. ~250 MB as
  complex64: burst-by-burst steps (geo2rdr, resample, burst interferograms) need a
  few such arrays regardless of the burst count.
* Geometry-layer merges write multilooked float rasters and stay small.

=============================  =======  ==========  =============
step (key kind)                base MB  full MB/bu  looked MB/bu
=============================  =======  ==========  =============
unpack_topo_reference          2000     100         0
unpack_secondary_slc           500      20          0
average_baseline               300      5           0
extract_burst_overlaps         500      20          0
overlap_geo2rdr                1000     10          0
overlap_resample               1000     10          0
pairs_misreg                   1000     20          0
timeseries_misreg              300      0           0
fullBurst_geo2rdr              2500     20          0
fullBurst_resample             2000     30          0
extract_stack_valid_region     300      5           0
merge (date)                   1000     50          0
merge (geometry layer)         300      0           30
generate_burst_igram           1500     20          0
merge_burst_igram              1000     100         30
filter_coherence               1000     100         100
unwrap                         2000     0           300
subband_and_resamp             2500     30          0
generateIgram_ion              1500     40          0
mergeBurstsIon                 1000     100         0
unwrap_ion                     1000     60          0
look_ion / computeIon          500      5           0
filtIon                        500      5           0
invertIon                      1000     10          0
=============================  =======  ==========  =============

The ionosphere steps work at the fixed looks of the ionosphere parameter file, not at
``range_looks x azimuth_looks``, so their cost is in the *full* column.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

from insarflow.tasks.topsstack.runfiles import KNOWN_STEPS

ResourceClass = Literal["gpu", "memory-heavy", "cpu"]
# The classes operators cap with Prefect tag concurrency limits (deployments/setup.py).
LIMITED_CLASSES: frozenset[ResourceClass] = frozenset({"gpu", "memory-heavy"})

DEFAULT_LOOKS = 9 * 3  # topsStack's default range x azimuth looks

_GPU_CAPABLE = frozenset({"unpack_topo_reference", "overlap_geo2rdr", "fullBurst_geo2rdr"})
_MEMORY_HEAVY = frozenset(
    {
        "overlap_resample",
        "fullBurst_resample",
        "subband_and_resamp",
        "merge_reference_secondary_slc",
        "merge_burst_igram",
        "mergeBurstsIon",
        "filter_coherence",
        "unwrap",
        "unwrap_ion",
    }
)

# step -> (base MB, MB per burst at full resolution, MB per burst at 9 x 3 looks)
_MODEL: Mapping[str, tuple[int, int, int]] = MappingProxyType(
    {
        "unpack_topo_reference": (2000, 100, 0),
        "unpack_secondary_slc": (500, 20, 0),
        "average_baseline": (300, 5, 0),
        "extract_burst_overlaps": (500, 20, 0),
        "overlap_geo2rdr": (1000, 10, 0),
        "overlap_resample": (1000, 10, 0),
        "pairs_misreg": (1000, 20, 0),
        "timeseries_misreg": (300, 0, 0),
        "fullBurst_geo2rdr": (2500, 20, 0),
        "fullBurst_resample": (2000, 30, 0),
        "extract_stack_valid_region": (300, 5, 0),
        "merge_reference_secondary_slc": (1000, 50, 0),
        "generate_burst_igram": (1500, 20, 0),
        "merge_burst_igram": (1000, 100, 30),
        "filter_coherence": (1000, 100, 100),
        "unwrap": (2000, 0, 300),
        "subband_and_resamp": (2500, 30, 0),
        "generateIgram_ion": (1500, 40, 0),
        "mergeBurstsIon": (1000, 100, 0),
        "unwrap_ion": (1000, 60, 0),
        "look_ion": (500, 5, 0),
        "computeIon": (500, 5, 0),
        "filtIon": (500, 5, 0),
        "invertIon": (1000, 10, 0),
    }
)
_GEOMETRY_LAYER_MERGE = (300, 0, 30)


def _check_step(step: str) -> None:
    if step not in _MODEL:
        raise ValueError(
            f"step={step!r} is not a topsStack step; expected one of {', '.join(KNOWN_STEPS)}"
        )


def resource_class(step: str, use_gpu: bool) -> ResourceClass:
    """``gpu``, ``memory-heavy`` or ``cpu`` for a run-file step (see the module doc)."""
    _check_step(step)
    if step in _GPU_CAPABLE:
        return "gpu" if use_gpu else "cpu"
    if step in _MEMORY_HEAVY:
        return "memory-heavy"
    return "cpu"


def estimate_memory_mb(
    step: str, key_kind: str, n_bursts: int, range_looks: int, azimuth_looks: int
) -> int:
    """Peak memory (MB) of one line of ``step`` over ``n_bursts`` bursts (module table)."""
    _check_step(step)
    if n_bursts < 1:
        raise ValueError(f"n_bursts={n_bursts} must be >= 1")
    if range_looks < 1 or azimuth_looks < 1:
        raise ValueError(
            f"range_looks={range_looks}, azimuth_looks={azimuth_looks}: looks must be >= 1"
        )
    base, full, looked = _MODEL[step]
    if step == "merge_reference_secondary_slc" and key_kind == "layer":
        base, full, looked = _GEOMETRY_LAYER_MERGE
    scale = DEFAULT_LOOKS / (range_looks * azimuth_looks)
    return math.ceil(base + n_bursts * (full + looked * scale))
