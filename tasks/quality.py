"""Quality of a finished MintPy run, for the report: interferogram coherence and dropped
pairs, unwrapping errors and closure phase over the triplets of the network, and the
reference point.

Unwrapping errors are counted MintPy's way (``T_int``, Yunjun et al. 2019, MintPy's
``unwrap_error_phase_closure.calc_num_triplet_with_nonzero_integer_ambiguity``): for each
pixel, the number of triplets whose closure phase of unwrapped phases carries a non-zero
integer number of cycles. ``quick_overview`` writes it for the loaded phase
(``numTriNonzeroIntAmbiguity.h5``); :func:`triplet_statistics` counts it by the same rule
for the phase after ``correct_unwrap_error``, in the pass that measures the closure phase
(MintPy's function would also draw a figure into the current directory, and fails on a
stack without any error).
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import h5py
import numpy as np
import numpy.typing as npt
from prefect import task

from insarflow.constants import MIN_COHERENCE_KEY, MIN_TEMP_COH_KEY
from insarflow.tasks.export import GeoGrid, MintpyProducts, locate_products, read_grid

# Datasets correct_unwrap_error writes, most corrected first (MintPy's names).
CORRECTED_DATASETS: Final = (
    "unwrapPhase_bridging_phaseClosure",
    "unwrapPhase_phaseClosure",
    "unwrapPhase_bridging",
)
# A reference pixel closer than this to the grid border or to a pixel without data.
EDGE_PIXELS: Final = 3
# Rows of the stack read at once are limited to about this many bytes.
_BLOCK_BYTES: Final = 128 * 1024**2


@dataclass(frozen=True)
class PairQuality:
    """One interferogram: its dates, baseline, mean coherence and whether MintPy used it."""

    pair: str
    bperp_m: float
    mean_coherence: float
    used: bool


@dataclass(frozen=True)
class TripletCount:
    """MintPy's count of triplets with a non-zero integer closure ambiguity, per pixel."""

    dataset: str
    pixels: int
    pixels_with_errors: int
    mean_per_pixel: float
    max_per_pixel: int


@dataclass(frozen=True)
class ClosurePhase:
    """Wrapped closure phase (rad) of the used interferograms' triplets."""

    dataset: str
    triplets: int
    median_abs_rad: float
    max_triplet_mean_abs_rad: float
    worst: list[tuple[str, float]]


@dataclass(frozen=True)
class ReferencePoint:
    """MintPy's reference point in the geocoded grid and how trustworthy it is."""

    lat: float
    lon: float
    row: int
    col: int
    date: str | None
    temporal_coherence: float
    avg_spatial_coherence: float
    reliable: bool
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Quality:
    """Everything :func:`assess_quality` found."""

    pairs: list[PairQuality]
    excluded_pairs: list[str]
    unwrap_errors: list[TripletCount]
    closure: ClosurePhase | None
    reference: ReferencePoint | None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def template_value(mintpy_dir: Path, key: str) -> float | None:
    """A numeric ``mintpy.*`` option of the run's template, ``auto`` resolved by MintPy."""
    cfg = Path(mintpy_dir) / "smallbaselineApp.cfg"
    if not cfg.is_file():
        return None
    from mintpy.utils import readfile
    from mintpy.utils import utils as ut

    with contextlib.redirect_stdout(None):
        template = ut.check_template_auto_value(readfile.read_template(str(cfg)))
    try:
        return float(template[key])
    except (KeyError, TypeError, ValueError):
        return None


def pair_quality(ifgram_stack: Path, max_pixels: int = 2000) -> list[PairQuality]:
    """Per interferogram: mean coherence (decimated to ``max_pixels`` a side), used or not."""
    with h5py.File(ifgram_stack, "r") as f:
        dates = [(_text(a), _text(b)) for a, b in f["date"][:]]
        used = np.asarray(f["dropIfgram"][:], dtype=bool)
        bperp = np.asarray(f["bperp"][:], dtype=np.float64)
        coh = f["coherence"]
        stride = max(1, math.ceil(max(coh.shape[1:]) / max_pixels))
        means = [float(np.nanmean(coh[i, ::stride, ::stride])) for i in range(coh.shape[0])]
    return [
        PairQuality(f"{a}_{b}", float(bp), c, bool(u))
        for (a, b), bp, c, u in zip(dates, bperp, means, used, strict=True)
    ]


def _counts(counts: npt.NDArray[Any], dataset: str) -> TripletCount:
    valid = counts[np.isfinite(counts)]
    return TripletCount(
        dataset=dataset,
        pixels=int(valid.size),
        pixels_with_errors=int((valid > 0).sum()),
        mean_per_pixel=float(valid.mean()) if valid.size else 0.0,
        max_per_pixel=int(valid.max()) if valid.size else 0,
    )


def loaded_phase_errors(mintpy_dir: Path) -> TripletCount | None:
    """Statistics of ``quick_overview``'s ``numTriNonzeroIntAmbiguity.h5`` (loaded phase)."""
    path = Path(mintpy_dir) / "numTriNonzeroIntAmbiguity.h5"
    if not path.is_file():
        return None
    with h5py.File(path, "r") as f:
        counts = np.asarray(f[next(iter(f.keys()))][:], dtype=np.float64)
    return _counts(counts, "unwrapPhase")


def corrected_dataset(ifgram_stack: Path) -> str | None:
    """The phase ``correct_unwrap_error`` wrote, None when it corrected nothing."""
    with h5py.File(ifgram_stack, "r") as f:
        return next((d for d in CORRECTED_DATASETS if d in f), None)


def triplet_statistics(
    ifgram_stack: Path, dataset: str | None = None
) -> tuple[ClosurePhase, TripletCount] | None:
    """Closure phase and unwrapping-error count of the triplets of used interferograms.

    ``dataset`` defaults to the most corrected phase. The stack is read block by block.
    Pixels MintPy leaves out of its count are left out here too: those with zero average
    coherence or a water-mask value of 0, and those where every triplet fails to close.
    None when the network has no triplet or no valid pixel.
    """
    from mintpy.objects import ifgramStack

    dataset = dataset or corrected_dataset(ifgram_stack) or "unwrapPhase"
    stack = ifgramStack(str(ifgram_stack))
    with contextlib.redirect_stdout(io.StringIO()):
        stack.open(print_msg=False)
        date12 = stack.get_date12_list(dropIfgram=True)
        design = stack.get_design_matrix4triplet(date12)
        if design is None:
            return None
        ref = stack.get_reference_phase(unwDatasetName=dataset, dropIfgram=True)
    excluded = _excluded_pixels(ifgram_stack, stack.length, stack.width)
    with h5py.File(ifgram_stack, "r") as f:
        used = np.flatnonzero(np.asarray(f["dropIfgram"][:], dtype=bool))
        phase = f[dataset]
        n_tri, n_ifg = design.shape
        _, length, width = phase.shape
        rows = max(1, _BLOCK_BYTES // (4 * width * (n_ifg + 2 * n_tri)))
        abs_sum = np.zeros(n_tri)
        n_valid = 0
        samples: list[npt.NDArray[np.float32]] = []
        counts = np.full(length * width, np.nan)
        for r0 in range(0, length, rows):
            block = np.asarray(phase[used.tolist(), r0 : r0 + rows, :], dtype=np.float64)
            block = block.reshape(n_ifg, -1) - np.asarray(ref, np.float64).reshape(n_ifg, 1)
            valid = np.all(np.isfinite(block), axis=0) & ~excluded[r0 : r0 + rows].ravel()
            closure = design @ block[:, valid]
            wrapped = np.angle(np.exp(1j * closure))
            cycles = np.round((closure - wrapped) / (2 * np.pi))
            n_bad = np.sum(cycles != 0, axis=0).astype(np.float64)
            n_bad[n_bad == n_tri] = np.nan
            counts[r0 * width : r0 * width + block.shape[1]][valid] = n_bad
            abs_sum += np.abs(wrapped).sum(axis=1)
            n_valid += int(valid.sum())
            # a sample of each block for the median, so memory does not grow with the scene
            step = max(1, wrapped.shape[1] // 1000)
            samples.append(np.abs(wrapped[:, ::step]).astype(np.float32))
    if n_valid == 0:
        return None
    per_triplet = abs_sum / n_valid
    names = _triplet_names(design, date12)
    order = np.argsort(-per_triplet)[:3]
    pooled = np.concatenate([s.ravel() for s in samples])
    closure_stats = ClosurePhase(
        dataset=dataset,
        triplets=int(n_tri),
        median_abs_rad=float(np.median(pooled)),
        max_triplet_mean_abs_rad=float(per_triplet.max()),
        worst=[(names[i], float(per_triplet[i])) for i in order],
    )
    return closure_stats, _counts(counts, dataset)


def _excluded_pixels(ifgram_stack: Path, length: int, width: int) -> npt.NDArray[np.bool_]:
    """Pixels MintPy's triplet count leaves out: zero average coherence, water."""
    mintpy_dir = Path(ifgram_stack).parent.parent
    excluded = np.zeros((length, width), dtype=bool)
    for name, bad_value in (("avgSpatialCoh.h5", 0), ("waterMask.h5", 0)):
        path = mintpy_dir / name
        if path.is_file():
            excluded |= _read(path, "") == bad_value
    return excluded


def _triplet_names(design: npt.NDArray[Any], date12: Sequence[str]) -> list[str]:
    names = []
    for row in design:
        dates = sorted({d for i in np.flatnonzero(row) for d in date12[int(i)].split("_")})
        names.append("_".join(dates))
    return names


def reference_yx(products: MintpyProducts, grid: GeoGrid) -> tuple[int, int] | None:
    """Row/column of the reference point in the geocoded grid, when known."""
    from mintpy.utils import readfile

    meta = readfile.read_attribute(str(products.velocity))
    if "REF_Y" in meta and "REF_X" in meta:
        return int(meta["REF_Y"]), int(meta["REF_X"])
    if grid.geographic and "REF_LAT" in meta and "REF_LON" in meta:
        return grid.index_of(float(meta["REF_LAT"]), float(meta["REF_LON"]))
    return None


def _read(path: Path, preferred: str) -> npt.NDArray[Any]:
    """A 2-D dataset: ``preferred`` when present, else the file's first one."""
    with h5py.File(path, "r") as f:
        name = preferred if preferred and preferred in f else next(iter(f.keys()))
        return np.asarray(f[name][:])


def reference_check(products: MintpyProducts) -> ReferencePoint | None:
    """MintPy's reference point with its coherence, and a warning for each problem:
    masked, incoherent (below MintPy's own thresholds) or at the edge of the data."""
    from mintpy.utils import readfile

    grid = read_grid(products)
    rc = reference_yx(products, grid)
    if rc is None or not (0 <= rc[0] < grid.length and 0 <= rc[1] < grid.width):
        return None
    r, c = rc
    tcoh = _read(products.temporal_coherence, "temporalCoherence")
    avg = _read(products.avg_spatial_coherence, "coherence")
    mask = _read(products.mask, "mask").astype(bool)
    meta = readfile.read_attribute(str(products.timeseries))
    ref_date = meta.get("REF_DATE")
    point = (float(grid.y_centres()[r]), float(grid.x_centres()[c]))
    where = f"reference point ({point[0]:.5f}, {point[1]:.5f})"
    warnings = []
    if not mask[r, c]:
        warnings.append(
            f"{where} is masked as unreliable by MintPy (maskTempCoh.h5): every value is "
            "relative to a noisy pixel; set mintpy.reference_point to a coherent, stable pixel"
        )
    min_tcoh = template_value(products.mintpy_dir, MIN_TEMP_COH_KEY)
    if min_tcoh is not None and not tcoh[r, c] >= min_tcoh:
        warnings.append(
            f"{where} has temporal coherence {tcoh[r, c]:.2f} < {min_tcoh:g} ({MIN_TEMP_COH_KEY})"
        )
    min_coh = template_value(products.mintpy_dir, MIN_COHERENCE_KEY)
    if min_coh is not None and not avg[r, c] >= min_coh:
        warnings.append(
            f"{where} has average spatial coherence {avg[r, c]:.2f} < {min_coh:g} "
            f"({MIN_COHERENCE_KEY})"
        )
    r0, r1 = r - EDGE_PIXELS, r + EDGE_PIXELS + 1
    c0, c1 = c - EDGE_PIXELS, c + EDGE_PIXELS + 1
    inside = r0 >= 0 and c0 >= 0 and r1 <= grid.length and c1 <= grid.width
    if not inside or not np.isfinite(tcoh[r0:r1, c0:c1]).all():
        warnings.append(
            f"{where} lies within {EDGE_PIXELS} pixels of the edge of the data: edges "
            "are the least reliable part of a scene; choose a point further inside"
        )
    return ReferencePoint(
        lat=point[0],
        lon=point[1],
        row=r,
        col=c,
        date=f"{ref_date[:4]}-{ref_date[4:6]}-{ref_date[6:8]}" if ref_date else None,
        temporal_coherence=float(tcoh[r, c]),
        avg_spatial_coherence=float(avg[r, c]),
        reliable=bool(mask[r, c]),
        warnings=warnings,
    )


def assess_quality(mintpy_dir: Path, excluded_dir: Path | None = None) -> Quality:
    """The quality figures of a finished MintPy run.

    ``excluded_dir`` is where the MintPy stage moved incomplete interferograms
    (``merged/interferograms.excluded``); their names are listed as excluded pairs.
    """
    products = locate_products(Path(mintpy_dir))
    excluded = (
        sorted(p.name for p in excluded_dir.iterdir() if p.is_dir())
        if excluded_dir is not None and excluded_dir.is_dir()
        else []
    )
    stack = products.ifgram_stack
    triplets = triplet_statistics(stack) if stack else None
    before = loaded_phase_errors(products.mintpy_dir)
    errors = [c for c in (before, triplets[1] if triplets else None) if c is not None]
    if len(errors) == 2 and errors[1].dataset == "unwrapPhase":
        errors = errors[:1]  # nothing corrected: the loaded phase is the final one
    return Quality(
        pairs=pair_quality(stack) if stack else [],
        excluded_pairs=excluded,
        unwrap_errors=errors,
        closure=triplets[0] if triplets else None,
        reference=reference_check(products),
    )


@task(name="assess-quality")
def assess_quality_task(mintpy_dir: Path, excluded_dir: Path | None = None) -> Quality:
    """Prefect task: :func:`assess_quality`."""
    return assess_quality(mintpy_dir, excluded_dir)
