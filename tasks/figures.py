"""PNG figures of a finished MintPy run: velocity map, network, point time series, coherence.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot state,
safe in worker threads) and written atomically. Maps wider than ``MAX_MAP_PIXELS`` are
decimated by striding the HDF5 read, so memory stays bounded for large stacks.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Sequence
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

from tasks.export import GeoGrid, MintpyProducts, locate_products, read_grid

FIGURE_NAMES: Final = {
    "velocity": "velocity_map.png",
    "network": "network.png",
    "timeseries": "timeseries_points.png",
    "coherence": "temporal_coherence_histogram.png",
}
MAX_MAP_PIXELS: Final = 2000
DPI: Final = 120
_log = logging.getLogger(__name__)


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return _log


def _new_figure(width: float = 7.0, height: float = 5.0) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        fig.savefig(tmp, format="png", dpi=DPI)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
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


def reference_yx(products: MintpyProducts, grid: GeoGrid) -> tuple[int, int] | None:
    """Row/column of the reference point in the geocoded grid, when known."""
    meta = _attrs(products.velocity)
    if "REF_Y" in meta and "REF_X" in meta:
        return int(meta["REF_Y"]), int(meta["REF_X"])
    if grid.geographic and "REF_LAT" in meta and "REF_LON" in meta:
        row = math.floor((float(meta["REF_LAT"]) - grid.y_first) / grid.y_step)
        col = math.floor((float(meta["REF_LON"]) - grid.x_first) / grid.x_step)
        return row, col
    return None


def select_points(
    velocity: npt.NDArray[np.floating[Any]],
    valid: npt.NDArray[np.bool_],
    n_points: int,
    min_separation: int,
) -> list[tuple[int, int]]:
    """Up to ``n_points`` pixels of largest |velocity| among ``valid`` ones.

    Points closer than ``min_separation`` pixels (Chebyshev distance) to one already
    chosen are passed over, so one deforming patch does not take every slot.
    """
    usable = valid & np.isfinite(velocity)
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


def plot_velocity_map(
    products: MintpyProducts,
    out_path: Path,
    *,
    points: Sequence[tuple[int, int]] = (),
) -> Path:
    """Masked LOS velocity in mm/yr with the reference point (and ``points``) marked."""
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
    fig.colorbar(image, ax=ax, label="LOS velocity [mm/yr] (positive towards satellite)")
    ys, xs = grid.y_centres(), grid.x_centres()
    ref = reference_yx(products, grid)
    if ref is not None and 0 <= ref[0] < grid.length and 0 <= ref[1] < grid.width:
        ax.plot(xs[ref[1]], ys[ref[0]], "ks", markersize=7, mfc="none", mew=2, label="reference")
    for i, (r, c) in enumerate(points, start=1):
        ax.plot(xs[c], ys[r], "k^", markersize=6)
        ax.annotate(f"P{i}", (xs[c], ys[r]), textcoords="offset points", xytext=(4, 4))
    if ref is not None:
        ax.legend(loc="lower right", fontsize="small")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(5))
        axis.set_major_formatter(ScalarFormatter(useOffset=False))
    unit = "deg" if grid.geographic else "m"
    ax.set_xlabel(f"{'longitude' if grid.geographic else 'easting'} [{unit}]")
    ax.set_ylabel(f"{'latitude' if grid.geographic else 'northing'} [{unit}]")
    ax.set_title("Mean LOS velocity (reliable pixels)")
    return _save(fig, out_path)


def _pair_dates(raw: npt.NDArray[Any]) -> list[tuple[np.datetime64, np.datetime64]]:
    def parse(value: Any) -> np.datetime64:
        text = value.decode() if isinstance(value, bytes) else str(value)
        return np.datetime64(f"{text[:4]}-{text[4:6]}-{text[6:8]}")

    return [(parse(a), parse(b)) for a, b in raw]


def plot_network(ifgram_stack: Path, out_path: Path) -> Path:
    """Interferogram network: date vs perpendicular baseline, pairs coloured by mean coherence."""
    from mintpy.objects import ifgramStack

    stack = ifgramStack(str(ifgram_stack))
    date_list = stack.get_date_list(dropIfgram=False)
    pbase = stack.get_perp_baseline_timeseries(dropIfgram=False)
    bperp_of = dict(zip(date_list, pbase, strict=True))
    with h5py.File(ifgram_stack, "r") as f:
        raw_dates = f["date"][:]
        keep = np.asarray(f["dropIfgram"][:], dtype=bool)
        coh = f["coherence"]
        stride = max(1, math.ceil(max(coh.shape[1:]) / MAX_MAP_PIXELS))
        mean_coh = np.array(
            [float(np.nanmean(coh[i, ::stride, ::stride])) for i in range(coh.shape[0])]
        )
    pairs = _pair_dates(raw_dates)
    keys = [
        (
            a.decode() if isinstance(a, bytes) else str(a),
            b.decode() if isinstance(b, bytes) else str(b),
        )
        for a, b in raw_dates
    ]

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
    times = [np.datetime64(f"{d[:4]}-{d[4:6]}-{d[6:8]}") for d in date_list]
    ax.plot(times, pbase, "o", color="k", markersize=5, zorder=3)
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
    products: MintpyProducts, out_path: Path, points: Sequence[tuple[int, int]]
) -> Path:
    """LOS displacement (mm) against date at ``points`` (row, column)."""
    from mintpy.utils import ptime

    grid = read_grid(products)
    with h5py.File(products.timeseries, "r") as f:
        raw = [d.decode() if isinstance(d, bytes) else str(d) for d in f["date"][:]]
        series = [
            np.asarray(f["timeseries"][:, r, c], dtype=np.float64) * 1000.0 for r, c in points
        ]
    with h5py.File(products.velocity, "r") as f:
        rates = [float(f["velocity"][r, c]) * 1000.0 for r, c in points]
    times = np.array(ptime.date_list2vector(raw)[0], dtype="datetime64[D]")
    ys, xs = grid.y_centres(), grid.x_centres()

    fig = _new_figure(8.0, 5.0)
    ax = fig.add_subplot()
    for i, ((r, c), values, rate) in enumerate(zip(points, series, rates, strict=True), start=1):
        ax.plot(
            times,
            values,
            "o-",
            markersize=4,
            label=f"P{i} ({ys[r]:.4f}, {xs[c]:.4f}): {rate:+.1f} mm/yr",
        )
    ax.axhline(0.0, color="0.5", linewidth=0.8)
    ax.set_xlabel("acquisition date")
    ax.set_ylabel("LOS displacement [mm]")
    ax.set_title("Time series at the points of largest |velocity|")
    if points:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no reliable pixel", transform=ax.transAxes, ha="center")
    fig.autofmt_xdate()
    return _save(fig, out_path)


def min_temporal_coherence(mintpy_dir: Path) -> float | None:
    """``mintpy.networkInversion.minTempCoh`` of the run's template (auto resolved)."""
    cfg = Path(mintpy_dir) / "smallbaselineApp.cfg"
    if not cfg.is_file():
        return None
    import contextlib

    from mintpy.utils import readfile
    from mintpy.utils import utils as ut

    with contextlib.redirect_stdout(None):
        template = ut.check_template_auto_value(readfile.read_template(str(cfg)))
    value = template.get("mintpy.networkInversion.minTempCoh")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


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


def make_figures(mintpy_dir: Path, out_dir: Path, *, n_points: int = 4) -> list[Path]:
    """Write the run's figures into ``out_dir``; returns their paths.

    The network figure needs ``inputs/ifgramStack.h5`` and is left out (with a
    warning) without it.
    """
    products = locate_products(Path(mintpy_dir))
    out_dir = Path(out_dir)
    grid = read_grid(products)
    velocity = _read_2d(products.velocity, "velocity")
    mask = _read_2d(products.mask, "mask").astype(bool)
    separation = max(3, min(grid.length, grid.width) // 10)
    points = select_points(velocity, mask, n_points, separation)

    paths = [plot_velocity_map(products, out_dir / FIGURE_NAMES["velocity"], points=points)]
    if products.ifgram_stack is not None:
        paths.append(plot_network(products.ifgram_stack, out_dir / FIGURE_NAMES["network"]))
    else:
        _logger().warning(
            "no %s; the network figure is left out", products.mintpy_dir / "inputs/ifgramStack.h5"
        )
    paths.append(plot_timeseries_points(products, out_dir / FIGURE_NAMES["timeseries"], points))
    paths.append(plot_coherence_histogram(products, out_dir / FIGURE_NAMES["coherence"]))
    return paths


@task(name="make-figures")
def make_figures_task(mintpy_dir: Path, out_dir: Path, n_points: int = 4) -> list[Path]:
    """Prefect task: :func:`make_figures`."""
    return make_figures(mintpy_dir, out_dir, n_points=n_points)
