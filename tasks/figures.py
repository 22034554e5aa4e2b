"""PNG figures of a finished MintPy run: velocity map, network, point time series, coherence.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot state,
safe in worker threads) and written atomically. Maps wider than ``MAX_MAP_PIXELS`` are
decimated by striding the HDF5 read, so memory stays bounded for large stacks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import h5py
import matplotlib
import numpy as np
import numpy.typing as npt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, ScalarFormatter
from prefect import task

from insarflow import atomic
from insarflow.constants import MIN_TEMP_COH_KEY
from insarflow.tasks.export import GeoGrid, MintpyProducts, locate_products, read_grid
from insarflow.tasks.quality import pair_quality, reference_yx, template_value

FIGURE_NAMES: Final = {
    "velocity": "velocity_map.png",
    "network": "network.png",
    "timeseries": "timeseries_points.png",
    "coherence": "temporal_coherence_histogram.png",
}
MAX_MAP_PIXELS: Final = 2000
DPI: Final = 120
_log = logging.getLogger(__name__)


def _new_figure(width: float = 7.0, height: float = 5.0) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    with atomic.replacing(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _stride(grid: GeoGrid) -> int:
    return max(1, math.ceil(max(grid.length, grid.width) / MAX_MAP_PIXELS))


def _read_2d(path: Path, name: str, stride: int = 1) -> npt.NDArray[Any]:
    with h5py.File(path, "r") as f:
        if name not in f:
            candidates = [k for k, v in f.items() if isinstance(v, h5py.Dataset) and v.ndim == 2]
            if len(candidates) != 1:
                raise KeyError(f"dataset {name!r} not found in {path}; found {candidates}")
            name = candidates[0]
        return np.asarray(f[name][::stride, ::stride])


def _attrs(path: Path) -> dict[str, str]:
    from mintpy.utils import readfile

    return {str(k): str(v) for k, v in readfile.read_attribute(str(path)).items()}


def select_points(
    velocity: npt.NDArray[np.floating[Any]],
    valid: npt.NDArray[np.bool_],
    n_points: int,
    min_separation: int,
    *,
    temporal_coherence: npt.NDArray[np.floating[Any]] | None = None,
    velocity_std: npt.NDArray[np.floating[Any]] | None = None,
) -> list[tuple[int, int]]:
    """Up to ``n_points`` pixels of largest |velocity| among trustworthy ``valid`` ones.

    With ``temporal_coherence`` and ``velocity_std``, only pixels at least as coherent and
    at most as uncertain as the median ``valid`` pixel are candidates: a pixel of large
    |velocity| that is barely coherent is noise, not deformation. Points closer than
    ``min_separation`` pixels (Chebyshev distance) to one already chosen are passed over,
    so one deforming patch does not take every slot.
    """
    usable = valid & np.isfinite(velocity)
    for values, keep_high in ((temporal_coherence, True), (velocity_std, False)):
        if values is None or not usable.any():
            continue
        finite = usable & np.isfinite(values)
        median = float(np.median(values[finite])) if finite.any() else np.nan
        usable &= (values >= median) if keep_high else (values <= median)
    rows, cols = np.nonzero(usable)
    order = np.argsort(-np.abs(velocity[rows, cols]), kind="stable")
    chosen: list[tuple[int, int]] = []
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if all(max(abs(r - r0), abs(c - c0)) >= min_separation for r0, c0 in chosen):
            chosen.append((r, c))
            if len(chosen) == n_points:
                break
    return chosen


@dataclass(frozen=True)
class SeriesPoint:
    """A pixel whose time series is plotted; ``name`` labels it on the map and the plot."""

    name: str
    row: int
    col: int
    lat: float
    lon: float
    reliable: bool


@dataclass(frozen=True)
class PointChoice:
    """The points to plot, and a warning for each user point that could not be used as is."""

    points: list[SeriesPoint]
    warnings: list[str]


def choose_points(
    products: MintpyProducts,
    user_points: Sequence[tuple[float, float]] = (),
    n_points: int = 4,
) -> PointChoice:
    """The user's ``(lat, lon)`` points, else up to ``n_points`` picked by :func:`select_points`.

    A user point outside the geocoded grid is left out with a warning; one on a masked
    pixel is kept (its values are MintPy's unmasked ones) with a warning.
    """
    grid = read_grid(products)
    velocity = _read_2d(products.velocity, "velocity")
    mask = _read_2d(products.mask, "mask").astype(bool)
    ys, xs = grid.y_centres(), grid.x_centres()
    warnings: list[str] = []
    points: list[SeriesPoint] = []
    if user_points:
        for i, (lat, lon) in enumerate(user_points, start=1):
            name = f"P{i}"
            rc = grid.index_of(lat, lon)
            if rc is None:
                left, right, bottom, top = grid.corners()
                warnings.append(
                    f"export.points: {name} ({lat}, {lon}) lies outside the geocoded scene "
                    f"(lat {bottom:.4f}..{top:.4f}, lon {left:.4f}..{right:.4f}); it is not "
                    "plotted"
                )
                continue
            r, c = rc
            reliable = bool(mask[r, c]) and bool(np.isfinite(velocity[r, c]))
            if not reliable:
                warnings.append(
                    f"export.points: {name} ({lat}, {lon}) falls on a pixel MintPy masks as "
                    "unreliable (maskTempCoh); its series is plotted from the unmasked values, "
                    "dashed"
                )
            points.append(SeriesPoint(name, r, c, float(ys[r]), float(xs[c]), reliable))
        return PointChoice(points, warnings)
    tcoh = _read_2d(products.temporal_coherence, "temporalCoherence")
    std = _read_2d(products.velocity, "velocityStd")
    separation = max(3, min(grid.length, grid.width) // 10)
    chosen = select_points(
        velocity, mask, n_points, separation, temporal_coherence=tcoh, velocity_std=std
    )
    for i, (r, c) in enumerate(chosen, start=1):
        points.append(SeriesPoint(f"P{i}", r, c, float(ys[r]), float(xs[c]), True))
    return PointChoice(points, warnings)


def _date_range(products: MintpyProducts) -> str:
    meta = _attrs(products.timeseries)
    first, last = meta.get("START_DATE", ""), meta.get("END_DATE", "")
    if not (first and last):
        return ""
    return f"{_iso(first)} to {_iso(last)}"


def _iso(yyyymmdd: str) -> str:
    return f"{yyyymmdd[:4]}-{yyyymmdd[4:6]}-{yyyymmdd[6:8]}"


def _reference_text(products: MintpyProducts, grid: GeoGrid) -> str:
    """'reference 2024-12-01, (34.1234, 116.5678)' from MintPy's attributes."""
    meta = _attrs(products.timeseries)
    parts = []
    if meta.get("REF_DATE"):
        parts.append(_iso(meta["REF_DATE"]))
    ref = reference_yx(products, grid)
    if ref is not None and 0 <= ref[0] < grid.length and 0 <= ref[1] < grid.width:
        y, x = grid.y_centres()[ref[0]], grid.x_centres()[ref[1]]
        parts.append(f"({y:.4f}, {x:.4f})" if grid.geographic else f"({y:.0f}, {x:.0f})")
    return "reference " + ", ".join(parts) if parts else ""


def plot_velocity_map(
    products: MintpyProducts,
    out_path: Path,
    *,
    points: Sequence[SeriesPoint] = (),
) -> Path:
    """Write :func:`velocity_map_figure` to ``out_path``."""
    return _save(velocity_map_figure(products, points=points), out_path)


def velocity_map_figure(products: MintpyProducts, *, points: Sequence[SeriesPoint] = ()) -> Figure:
    """Masked LOS velocity in mm/yr with the reference point (and ``points``) marked.

    A geographic grid is drawn with a 1/cos(latitude) aspect so that a kilometre is as
    long east-west as north-south; colours saturate at the 98th percentile of |velocity|
    and the colour bar shows arrows for the values beyond.
    """
    grid = read_grid(products)
    stride = _stride(grid)
    velocity = _read_2d(products.velocity, "velocity", stride).astype(np.float64) * 1000.0
    mask = _read_2d(products.mask, "mask", stride).astype(bool)
    shown = np.where(mask, velocity, np.nan)
    finite = shown[np.isfinite(shown)]
    limit = float(np.percentile(np.abs(finite), 98)) if finite.size else 1.0
    limit = limit or 1.0

    fig = _new_figure()
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.85")
    image = ax.imshow(
        shown,
        cmap=cmap,
        vmin=-limit,
        vmax=limit,
        extent=grid.corners(),
        interpolation="nearest",
        origin="upper" if grid.y_step < 0 else "lower",
    )
    fig.colorbar(
        image,
        ax=ax,
        extend=_extend(finite, -limit, limit),
        label="LOS velocity [mm year-1] (positive towards satellite)",
    )
    if grid.geographic:
        mid_lat = grid.y_first + grid.length * grid.y_step / 2
        ax.set_aspect(1.0 / math.cos(math.radians(mid_lat)))
    ys, xs = grid.y_centres(), grid.x_centres()
    ref = reference_yx(products, grid)
    if ref is not None and 0 <= ref[0] < grid.length and 0 <= ref[1] < grid.width:
        ax.plot(xs[ref[1]], ys[ref[0]], "ks", markersize=7, mfc="none", mew=2, label="reference")
    for point in points:
        ax.plot(xs[point.col], ys[point.row], "k^", markersize=6)
        ax.annotate(
            point.name, (xs[point.col], ys[point.row]), textcoords="offset points", xytext=(4, 4)
        )
    if ref is not None:
        ax.legend(loc="lower right", fontsize="small")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(5))
        axis.set_major_formatter(ScalarFormatter(useOffset=False))
    unit = "deg" if grid.geographic else "m"
    ax.set_xlabel(f"{'longitude' if grid.geographic else 'easting'} [{unit}]")
    ax.set_ylabel(f"{'latitude' if grid.geographic else 'northing'} [{unit}]")
    subtitle = ", ".join(t for t in (_date_range(products), _reference_text(products, grid)) if t)
    ax.set_title("Mean LOS velocity (reliable pixels)" + (f"\n{subtitle}" if subtitle else ""))
    return fig


def _extend(values: npt.NDArray[Any], vmin: float, vmax: float) -> str:
    """Matplotlib's colour-bar ``extend`` for values clipped to ``[vmin, vmax]``."""
    low = bool(values.size and values.min() < vmin)
    high = bool(values.size and values.max() > vmax)
    return {(True, True): "both", (True, False): "min", (False, True): "max"}.get(
        (low, high), "neither"
    )


def _date64(yyyymmdd: str) -> np.datetime64:
    return np.datetime64(f"{yyyymmdd[:4]}-{yyyymmdd[4:6]}-{yyyymmdd[6:8]}")


def plot_network(ifgram_stack: Path, out_path: Path) -> Path:
    """Interferogram network: date vs perpendicular baseline, pairs coloured by mean coherence."""
    from mintpy.objects import ifgramStack

    stack = ifgramStack(str(ifgram_stack))
    date_list = stack.get_date_list(dropIfgram=False)
    pbase = stack.get_perp_baseline_timeseries(dropIfgram=False)
    bperp_of = dict(zip(date_list, pbase, strict=True))
    quality = pair_quality(ifgram_stack, MAX_MAP_PIXELS)
    keys = [tuple(q.pair.split("_")) for q in quality]
    keep = np.array([q.used for q in quality], dtype=bool)
    mean_coh = [q.mean_coherence for q in quality]
    pairs = [(_date64(a), _date64(b)) for a, b in keys]

    fig = _new_figure(8.0, 5.0)
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["viridis"]
    norm = Normalize(vmin=0.0, vmax=1.0)
    for (t1, t2), (d1, d2), used, c in zip(pairs, keys, keep, mean_coh, strict=True):
        y = [bperp_of[d1], bperp_of[d2]]
        if used:
            ax.plot([t1, t2], y, "-", color=cmap(norm(c)), linewidth=1.5, alpha=0.9)
        else:
            ax.plot([t1, t2], y, "--", color="0.6", linewidth=1.0)
    ax.plot([_date64(d) for d in date_list], pbase, "o", color="k", markersize=5, zorder=3)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="mean spatial coherence")
    n_drop = int((~keep).sum())
    ax.set_title(
        f"Interferogram network: {len(date_list)} dates, {len(keys)} pairs"
        + (f" ({n_drop} dropped, dashed)" if n_drop else "")
    )
    ax.set_xlabel("acquisition date")
    ax.set_ylabel("perpendicular baseline [m]")
    fig.autofmt_xdate()
    return _save(fig, out_path)


def plot_timeseries_points(
    products: MintpyProducts, out_path: Path, points: Sequence[SeriesPoint]
) -> Path:
    """Write :func:`timeseries_figure` to ``out_path``."""
    return _save(timeseries_figure(products, points), out_path)


def timeseries_figure(products: MintpyProducts, points: Sequence[SeriesPoint]) -> Figure:
    """LOS displacement (mm) against date at ``points``; unreliable ones dashed."""
    from mintpy.utils import ptime

    grid = read_grid(products)
    with h5py.File(products.timeseries, "r") as f:
        raw = [d.decode() if isinstance(d, bytes) else str(d) for d in f["date"][:]]
        series = [
            np.asarray(f["timeseries"][:, p.row, p.col], dtype=np.float64) * 1000.0 for p in points
        ]
    with h5py.File(products.velocity, "r") as f:
        rates = [float(f["velocity"][p.row, p.col]) * 1000.0 for p in points]
    times = np.array(ptime.date_list2vector(raw)[0], dtype="datetime64[D]")

    fig = _new_figure(8.0, 5.0)
    ax = fig.add_subplot()
    for point, values, rate in zip(points, series, rates, strict=True):
        ax.plot(
            times,
            values,
            "o-" if point.reliable else "o--",
            markersize=4,
            label=f"{point.name} ({point.lat:.4f}, {point.lon:.4f}): {rate:+.1f} mm year-1"
            + ("" if point.reliable else " (masked)"),
        )
    ax.axhline(0.0, color="0.5", linewidth=0.8)
    ax.set_xlabel("acquisition date")
    ax.set_ylabel("LOS displacement [mm]")
    subtitle = ", ".join(t for t in (_date_range(products), _reference_text(products, grid)) if t)
    ax.set_title("LOS displacement time series" + (f"\n{subtitle}" if subtitle else ""))
    if points:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no reliable pixel", transform=ax.transAxes, ha="center")
    fig.autofmt_xdate()
    return fig


def min_temporal_coherence(mintpy_dir: Path) -> float | None:
    """``mintpy.networkInversion.minTempCoh`` of the run's template (auto resolved)."""
    return template_value(mintpy_dir, MIN_TEMP_COH_KEY)


def plot_coherence_histogram(products: MintpyProducts, out_path: Path) -> Path:
    """Histogram of temporal coherence with MintPy's mask threshold, when known."""
    grid = read_grid(products)
    tcoh = _read_2d(products.temporal_coherence, "temporalCoherence", _stride(grid))
    values = tcoh[np.isfinite(tcoh)]
    threshold = min_temporal_coherence(products.mintpy_dir)

    fig = _new_figure()
    ax = fig.add_subplot()
    ax.hist(values, bins=50, range=(0.0, 1.0), color="tab:blue", edgecolor="white")
    title = f"Temporal coherence ({values.size} pixels)"
    if threshold is not None:
        ax.axvline(threshold, color="tab:red", linestyle="--", label=f"mask threshold {threshold}")
        share = float((values >= threshold).mean()) if values.size else 0.0
        title += f", {share:.0%} >= {threshold}"
        ax.legend()
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("temporal coherence")
    ax.set_ylabel("pixels")
    ax.set_title(title)
    return _save(fig, out_path)


@dataclass(frozen=True)
class Figures:
    """The figures written, the time-series points shown and warnings about user points."""

    paths: list[Path]
    points: list[SeriesPoint]
    warnings: list[str]


def make_figures(
    mintpy_dir: Path,
    out_dir: Path,
    *,
    points: Sequence[tuple[float, float]] = (),
    n_points: int = 4,
) -> list[Path]:
    """Write the run's figures into ``out_dir``; returns their paths (see :func:`draw_figures`)."""
    return draw_figures(mintpy_dir, out_dir, points=points, n_points=n_points).paths


def draw_figures(
    mintpy_dir: Path,
    out_dir: Path,
    *,
    points: Sequence[tuple[float, float]] = (),
    n_points: int = 4,
) -> Figures:
    """Write the run's figures into ``out_dir``.

    ``points`` are the user's ``(lat, lon)`` points for the time-series figure; without
    them ``n_points`` are chosen (see :func:`choose_points`). The network figure needs
    ``inputs/ifgramStack.h5`` and is left out (with a warning) without it.
    """
    products = locate_products(Path(mintpy_dir))
    out_dir = Path(out_dir)
    choice = choose_points(products, points, n_points)
    for warning in choice.warnings:
        _log.warning(warning)

    paths = [plot_velocity_map(products, out_dir / FIGURE_NAMES["velocity"], points=choice.points)]
    if products.ifgram_stack is not None:
        paths.append(plot_network(products.ifgram_stack, out_dir / FIGURE_NAMES["network"]))
    else:
        _log.warning(
            "no %s; the network figure is left out", products.mintpy_dir / "inputs/ifgramStack.h5"
        )
    paths.append(
        plot_timeseries_points(products, out_dir / FIGURE_NAMES["timeseries"], choice.points)
    )
    paths.append(plot_coherence_histogram(products, out_dir / FIGURE_NAMES["coherence"]))
    return Figures(paths=paths, points=choice.points, warnings=choice.warnings)


@task(name="make-figures")
def make_figures_task(
    mintpy_dir: Path,
    out_dir: Path,
    points: Sequence[tuple[float, float]] = (),
    n_points: int = 4,
) -> Figures:
    """Prefect task: :func:`draw_figures`."""
    return draw_figures(mintpy_dir, out_dir, points=points, n_points=n_points)
