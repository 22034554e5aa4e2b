"""What a stack configuration would run: dates, pairs, run-file steps and line counts.

The run-file steps and their line counts come from the step registry
(:mod:`insarflow.tasks.topsstack.steps`) and follow what stackSentinel.py writes
(checked against the real run files in the fixtures: 59 lines for 4 dates, NESD,
2 connections).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import date, timedelta

from insarflow.config import StackConfig
from insarflow.tasks.topsstack import steps
from insarflow.tasks.topsstack.steps import StackCounts
from insarflow.tasks.topsstack.swath_pieces import SPLIT_STEPS

BURSTS_PER_SWATH = 9  # a Sentinel-1 IW slice; used when real bursts are not known yet
SAFE_ZIP_GB = 4.5  # a dual-pol IW SLC zip
FULL_RES_BURST_MB = 1500 * 21000 * 8 / 2**20  # ~1,500 lines x 21,000 samples complex64
# The simulator's scale, measured on `insarflow demo` (12 dates, 30 pairs, 150 x 200 pixels:
# 109 MB on disk, largest line 344 MB peak RSS): bytes per multilooked pixel per date
# (secondary and coregistered SLCs, geometry) and per pair (interferograms, merged
# products, MintPy), plus the DEM and the rest.
SIM_BYTES_PER_PIXEL_DATE = 42
SIM_BYTES_PER_PIXEL_PAIR = 86
SIM_FIXED_MB = 20
SIM_LINE_MEMORY_MB = 400


def sequential_pairs(dates: list[str], connections: int) -> list[tuple[str, str]]:
    """Each date paired with its next ``connections`` dates, as stackSentinel does."""
    return [
        (d1, dates[j])
        for i, d1 in enumerate(dates)
        for j in range(i + 1, min(i + 1 + connections, len(dates)))
    ]


def _days(d1: str, d2: str) -> int:
    from datetime import datetime

    fmt = "%Y%m%d"
    return (datetime.strptime(d2, fmt) - datetime.strptime(d1, fmt)).days


def disconnected_dates(
    processed: list[str], fresh: list[str], connections: int, max_days: float | None = None
) -> list[str]:
    """The dates of ``fresh`` that no chain of interferograms links to a ``processed`` date.

    The network is :func:`sequential_pairs` over all the dates, less the pairs longer than
    ``max_days`` (MintPy's ``mintpy.network.tempBaseMax``), which is where a gap bites.
    """
    dates = sorted(set(processed) | set(fresh))
    root = {d: d for d in dates}

    def find(d: str) -> str:
        while root[d] != d:
            d = root[d]
        return d

    for d1, d2 in sequential_pairs(dates, connections):
        if max_days is None or _days(d1, d2) <= max_days:
            root[find(d2)] = find(d1)
    linked = {find(d) for d in processed}
    return [d for d in sorted(fresh) if find(d) not in linked] if linked else []


def largest_gap(dates: list[str]) -> tuple[str, str, int]:
    """The longest time between consecutive ``dates`` (the latest of equal ones): (before,
    after, days)."""
    ordered = sorted(dates)
    return max(
        ((a, b, _days(a, b)) for a, b in itertools.pairwise(ordered)),
        key=lambda gap: (gap[2], gap[0]),
    )


@dataclass
class StackPlan:
    """The shape of the work for one stack."""

    dates: list[str]
    reference: str
    pairs: list[tuple[str, str]]
    steps: list[tuple[str, int]] = field(default_factory=list)
    bursts: int = 0
    disk_gb: float = 0.0
    slc_gb: float = 0.0
    peak_memory_mb: int = 0
    dates_are_estimated: bool = False
    swath_pieces: int = 1  # tasks per line of a step split by swath (topsstack.split_swaths)

    def tasks(self, run_file: str, lines: int) -> int:
        """Tasks the engine runs for ``lines`` lines of ``run_file`` (``run_NN_<step>``)."""
        split = run_file.split("_", 2)[2] in SPLIT_STEPS
        return lines * (self.swath_pieces if split else 1)

    @property
    def processing_bytes(self) -> int:
        """Estimated bytes topsStack writes into the stack directory (everything but SLCs)."""
        return int((self.disk_gb - self.slc_gb) * 1024**3)

    @property
    def total_lines(self) -> int:
        return sum(n for _, n in self.steps)


def run_file_steps(
    n_dates: int, n_pairs: int, n_misreg_pairs: int, coregistration: str, ion: bool
) -> list[tuple[str, int]]:
    """(run file name, number of lines) in stackSentinel's order and numbering."""
    counts = StackCounts(dates=n_dates, pairs=n_pairs, misreg_pairs=n_misreg_pairs)
    return steps.run_file_steps(counts, coregistration, ion)


def expected_dates(config: StackConfig) -> tuple[list[str], bool]:
    """The stack's dates: exact for the simulator, a 12-day estimate for a real search.

    An open-ended stack counts what can exist by today, never dates still to come.
    """
    acq = config.acquisition
    if config.engine == "simulator":
        sim = config.simulator
        return [
            (acq.start + timedelta(days=i * sim.interval_days)).strftime("%Y%m%d")
            for i in range(sim.dates)
        ], False
    out: list[str] = []
    day: date = acq.start
    last = acq.last_date()
    while day <= last:
        if day not in acq.exclude_dates:
            out.append(day.strftime("%Y%m%d"))
        day += timedelta(days=12)
    return out, True


def _simulator_bursts(config: StackConfig) -> int:
    from insarflow.flows.stages import scene_spec_for

    return scene_spec_for(config).bursts_per_swath * len(config.topsstack.swaths)


def plan_stack(
    config: StackConfig, dates: list[str] | None = None, bursts: int | None = None
) -> StackPlan:
    """Plan the stack for ``dates`` (default: :func:`expected_dates`) and ``bursts`` over all
    swaths (default: counted from the SAFE zips by the caller, else 9 per swath)."""
    from insarflow.tasks.topsstack.resources import estimate_memory_mb

    estimated = False
    if dates is None:
        dates, estimated = expected_dates(config)
    ts = config.topsstack
    ref = ts.reference_date.strftime("%Y%m%d") if ts.reference_date else dates[0]
    pairs = sequential_pairs(dates, ts.connections)
    misreg = sequential_pairs(dates, ts.num_overlap_connections)
    steps = run_file_steps(
        len(dates), len(pairs), len(misreg), ts.coregistration, ts.ion_param_file is not None
    )
    if config.engine == "simulator":
        sim = config.simulator
        pixel_bytes = (
            sim.length
            * sim.width
            * (SIM_BYTES_PER_PIXEL_DATE * len(dates) + SIM_BYTES_PER_PIXEL_PAIR * len(pairs))
        )
        return StackPlan(
            dates=dates,
            reference=ref,
            pairs=pairs,
            steps=steps,
            bursts=_simulator_bursts(config),
            disk_gb=round(pixel_bytes / 1024**3 + SIM_FIXED_MB / 1024, 3),
            peak_memory_mb=SIM_LINE_MEMORY_MB,
            dates_are_estimated=estimated,
        )
    bursts = bursts or BURSTS_PER_SWATH * len(ts.swaths)
    looks = ts.range_looks * ts.azimuth_looks
    # Disk: SAFE zips + coregistered full-res bursts + merged SLCs + multilooked products.
    slc_gb = len(dates) * SAFE_ZIP_GB * len(ts.swaths) / 3
    coreg_gb = len(dates) * bursts * FULL_RES_BURST_MB * 2 / 1024  # burst SLCs + merged
    burst_igram_gb = len(pairs) * bursts * FULL_RES_BURST_MB / 1024
    merged_gb = len(pairs) * bursts * FULL_RES_BURST_MB * 3 / looks / 1024
    peak = max(
        estimate_memory_mb(name.split("_", 2)[2], "pair", bursts, ts.range_looks, ts.azimuth_looks)
        for name, _ in steps
    )
    return StackPlan(
        dates=dates,
        reference=ref,
        pairs=pairs,
        steps=steps,
        bursts=bursts,
        disk_gb=round(slc_gb + coreg_gb + burst_igram_gb + merged_gb, 1),
        slc_gb=round(slc_gb, 1),
        peak_memory_mb=peak,
        dates_are_estimated=estimated,
        swath_pieces=len(ts.swaths) if ts.split_swaths else 1,
    )
