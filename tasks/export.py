"""Export MintPy's geocoded results: a zarr store, NetCDF and Cloud-Optimized GeoTIFF.

Conventions shared by every product:

- Values are MintPy's own, line of sight, positive towards the satellite, in one unit
  convention (CF/UDUNITS spelling) everywhere, zarr, NetCDF, GeoTIFF and the run report:
  velocity and its standard deviation in ``m year-1`` (:data:`VELOCITY_UNITS`),
  displacement in ``m``. Figures label the same units scaled to mm for legibility.
- Coordinates are pixel centres. MintPy's ``Y_FIRST``/``X_FIRST`` is the outer corner
  of the first pixel (GDAL's convention, see MintPy's ``coordinate.yx2lalo``), so
  ``y[i] = Y_FIRST + (i + 0.5) * Y_STEP`` and ``x[j] = X_FIRST + (j + 0.5) * X_STEP``;
  the GeoTIFF transform is ``(X_STEP, 0, X_FIRST, 0, Y_STEP, Y_FIRST)``.
- Dimensions are always ``(time, y, x)``; for a geographic grid ``y``/``x`` carry
  ``standard_name`` latitude/longitude. The CRS is in a ``spatial_ref`` coordinate that
  rioxarray reads (``ds.rio.crs``) without ``decode_coords="all"``.
- ``velocity``, ``velocity_std`` and ``timeseries`` are masked by MintPy's reliable-pixel
  mask (``maskTempCoh.h5``, exported as ``mask``): NaN where the mask is 0. MintPy's
  unmasked values stay available as ``velocity_unmasked`` and ``timeseries_unmasked``.
- Zarr layout: format 2 with consolidated metadata (format 3 consolidated metadata
  warns under zarr 3). Default chunks are all dates x 256 x 256: one chunk read gives
  the full time series of any pixel, a map at one date reads the 256 x 256 tiles.

Every writer streams through Dask (HDF5 read block by block, threaded scheduler in
this process), so peak memory is a few chunks, not the stack.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import dask
import dask.array as da
import h5py
import numpy as np
import numpy.typing as npt
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine
from prefect import task

from insarflow import __version__, atomic
from insarflow.tasks.diskspace import disk_full_error, is_disk_full

ProductFormat = Literal["zarr", "geotiff", "netcdf"]

ZARR_NAME: Final = "timeseries.zarr"
NETCDF_NAME: Final = "timeseries.nc"
VELOCITY_UNITS: Final = "m year-1"
# GeoTIFF name -> zarr variable; maps are written masked like the zarr variables.
GEOTIFF_NAMES: Final = {
    "velocity": "velocity.tif",
    "velocity_std": "velocity_std.tif",
    "mask": "mask.tif",
    "temporal_coherence": "temporal_coherence.tif",
    "avg_spatial_coherence": "avg_spatial_coherence.tif",
}
DEFAULT_CHUNKS: Final[Mapping[str, int]] = {"time": -1, "y": 256, "x": 256}
FINGERPRINT_ATTR: Final = "insarflow_fingerprint"
# Bump when the layout of the products changes so that existing ones are rewritten.
LAYOUT_VERSION: Final = "2"
VARIABLES: Final = (
    "velocity",
    "velocity_unmasked",
    "velocity_std",
    "timeseries",
    "timeseries_unmasked",
    "temporal_coherence",
    "avg_spatial_coherence",
    "mask",
    "height",
)

_log = logging.getLogger(__name__)
_GEOCODE_FIX = (
    "run the geocode step of MintPy (smallbaselineApp.py smallbaselineApp.cfg --dostep geocode "
    "with mintpy.geocode = yes)"
)


# ---------------------------------------------------------------------------------------
# Locating MintPy's geocoded outputs


@dataclass(frozen=True)
class MintpyProducts:
    """The geocoded MintPy files one export reads."""

    mintpy_dir: Path
    velocity: Path
    timeseries: Path
    temporal_coherence: Path
    avg_spatial_coherence: Path
    mask: Path
    geometry: Path
    ifgram_stack: Path | None

    def geocoded_files(self) -> list[Path]:
        return [
            self.velocity,
            self.timeseries,
            self.temporal_coherence,
            self.avg_spatial_coherence,
            self.mask,
            self.geometry,
        ]


def final_timeseries_name(mintpy_dir: Path) -> str | None:
    """Basename of the time series MintPy geocodes, from ``smallbaselineApp.cfg``.

    Uses MintPy's own rule (``TimeSeriesAnalysis.get_timeseries_filename``); None when
    the template or the radar ``timeseries.h5`` is missing or unreadable.
    """
    cfg = mintpy_dir / "smallbaselineApp.cfg"
    if not cfg.is_file() or not (mintpy_dir / "timeseries.h5").is_file():
        return None
    from mintpy.smallbaselineApp import TimeSeriesAnalysis
    from mintpy.utils import readfile
    from mintpy.utils import utils as ut

    try:
        with contextlib.redirect_stdout(None):
            template = ut.check_template_auto_value(readfile.read_template(str(cfg)))
            steps = TimeSeriesAnalysis.get_timeseries_filename(template, str(mintpy_dir))
    except (KeyError, ValueError, OSError) as exc:
        _log.warning("cannot derive the final time series from %s: %s", cfg, exc)
        return None
    return Path(steps["geocode"]["input"]).name


def _pick_timeseries(directory: Path, prefix: str, mintpy_dir: Path) -> Path:
    wanted = final_timeseries_name(mintpy_dir)
    if wanted is not None and (directory / f"{prefix}{wanted}").is_file():
        return directory / f"{prefix}{wanted}"
    # MintPy's rule without a template: every correction appends a suffix to the
    # previous name, so the final time series sorts last.
    candidates = sorted(
        p for p in directory.glob(f"{prefix}timeseries*.h5") if "Residual" not in p.name
    )
    if not candidates:
        raise FileNotFoundError(
            f"no geocoded time series ({prefix}timeseries*.h5) in {directory}; {_GEOCODE_FIX}"
        )
    return candidates[-1]


def _is_geocoded(path: Path) -> bool:
    from mintpy.utils import readfile

    return "Y_FIRST" in readfile.read_attribute(str(path))


def locate_products(mintpy_dir: Path) -> MintpyProducts:
    """Find the geocoded outputs of a finished MintPy run.

    MintPy's geocode step writes ``geo/geo_<name>.h5``; a stack that was geocoded on input
    (no geocode step) has the files in the work directory itself.
    """
    mintpy_dir = Path(mintpy_dir)
    if not mintpy_dir.is_dir():
        raise FileNotFoundError(
            f"MintPy work directory {mintpy_dir} does not exist; run the MintPy stage first"
        )
    geo_dir = mintpy_dir / "geo"
    if (geo_dir / "geo_velocity.h5").is_file():
        directory, prefix = geo_dir, "geo_"
        geometry_names = ["geo_geometryRadar.h5", "geo_geometryGeo.h5"]
    elif (mintpy_dir / "velocity.h5").is_file() and _is_geocoded(mintpy_dir / "velocity.h5"):
        directory, prefix = mintpy_dir, ""
        geometry_names = ["inputs/geometryGeo.h5"]
    else:
        raise FileNotFoundError(
            f"no geocoded velocity in {mintpy_dir}: {geo_dir / 'geo_velocity.h5'} is missing "
            f"and {mintpy_dir / 'velocity.h5'} is missing or in radar coordinates; {_GEOCODE_FIX}"
        )
    geometry = next(
        (directory / n for n in geometry_names if (directory / n).is_file()),
        directory / geometry_names[0],
    )
    ifgram = mintpy_dir / "inputs" / "ifgramStack.h5"
    products = MintpyProducts(
        mintpy_dir=mintpy_dir,
        velocity=directory / f"{prefix}velocity.h5",
        timeseries=_pick_timeseries(directory, prefix, mintpy_dir),
        temporal_coherence=directory / f"{prefix}temporalCoherence.h5",
        avg_spatial_coherence=directory / f"{prefix}avgSpatialCoh.h5",
        mask=directory / f"{prefix}maskTempCoh.h5",
        geometry=geometry,
        ifgram_stack=ifgram if ifgram.is_file() else None,
    )
    missing = [str(p) for p in products.geocoded_files() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"incomplete MintPy geocoded outputs in {directory}: missing {', '.join(missing)}; "
            f"{_GEOCODE_FIX}"
        )
    return products


# ---------------------------------------------------------------------------------------
# Grid and CRS


@dataclass(frozen=True)
class GeoGrid:
    """A MintPy geocoded grid: ``*_FIRST`` is the outer corner of the first pixel."""

    length: int
    width: int
    y_first: float
    x_first: float
    y_step: float
    x_step: float
    epsg: int

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str], source: Path) -> GeoGrid:
        """Grid of a MintPy file's attributes; ``source`` names the file in errors."""
        required = ["LENGTH", "WIDTH", "Y_FIRST", "X_FIRST", "Y_STEP", "X_STEP"]
        missing = [k for k in required if k not in meta]
        if missing:
            raise ValueError(
                f"{source} is not geocoded: attributes {', '.join(missing)} missing; {_GEOCODE_FIX}"
            )
        return cls(
            length=int(meta["LENGTH"]),
            width=int(meta["WIDTH"]),
            y_first=float(meta["Y_FIRST"]),
            x_first=float(meta["X_FIRST"]),
            y_step=float(meta["Y_STEP"]),
            x_step=float(meta["X_STEP"]),
            epsg=epsg_from_metadata(meta, source),
        )

    @property
    def geographic(self) -> bool:
        return self.epsg == 4326

    @property
    def transform(self) -> Affine:
        return Affine(self.x_step, 0.0, self.x_first, 0.0, self.y_step, self.y_first)

    def y_centres(self) -> npt.NDArray[np.float64]:
        return np.asarray(self.y_first + (np.arange(self.length) + 0.5) * self.y_step, np.float64)

    def x_centres(self) -> npt.NDArray[np.float64]:
        return np.asarray(self.x_first + (np.arange(self.width) + 0.5) * self.x_step, np.float64)

    def index_of(self, lat: float, lon: float) -> tuple[int, int] | None:
        """(row, column) of the pixel holding ``(lat, lon)`` in degrees; None outside."""
        y, x = lat, lon
        if not self.geographic:
            from pyproj import Transformer

            to_grid = Transformer.from_crs(4326, self.epsg, always_xy=True)
            x, y = to_grid.transform(lon, lat)
        row = math.floor((y - self.y_first) / self.y_step)
        col = math.floor((x - self.x_first) / self.x_step)
        if 0 <= row < self.length and 0 <= col < self.width:
            return row, col
        return None

    def corners(self) -> tuple[float, float, float, float]:
        """(left, right, bottom, top) outer edges, for ``imshow(extent=...)``."""
        ys = (self.y_first, self.y_first + self.length * self.y_step)
        xs = (self.x_first, self.x_first + self.width * self.x_step)
        return min(xs), max(xs), min(ys), max(ys)


def epsg_from_metadata(meta: Mapping[str, str], source: Path) -> int:
    """EPSG code of a MintPy geocoded file.

    ``EPSG`` when present (GDAL-read inputs), else ``UTM_ZONE``, else WGS84 lat/lon for
    degree units (what MintPy's geocode with an ISCE2 lookup table writes).
    """
    if meta.get("EPSG"):
        return int(meta["EPSG"])
    if meta.get("UTM_ZONE"):
        from mintpy.utils import utils0

        return int(utils0.utm_zone2epsg_code(meta["UTM_ZONE"]))
    unit = meta.get("Y_UNIT", "degrees").lower()
    if unit.startswith("deg"):
        return 4326
    raise ValueError(
        f"{source}: cannot tell the coordinate system (Y_UNIT={meta.get('Y_UNIT')!r}, "
        "no EPSG or UTM_ZONE attribute); add EPSG=<code> to the file's attributes"
    )


def _read_meta(path: Path) -> dict[str, str]:
    from mintpy.utils import readfile

    return {str(k): str(v) for k, v in readfile.read_attribute(str(path)).items()}


def read_grid(products: MintpyProducts) -> GeoGrid:
    """The common grid of all geocoded files; a file on another grid is an error."""
    grid = GeoGrid.from_metadata(_read_meta(products.velocity), products.velocity)
    for path in products.geocoded_files()[1:]:
        other = GeoGrid.from_metadata(_read_meta(path), path)
        if other != grid:
            raise ValueError(
                f"{path} is on another grid than {products.velocity} ({other} vs {grid}); "
                f"geocode all files in one run: {_GEOCODE_FIX}"
            )
    return grid


# ---------------------------------------------------------------------------------------
# Lazy dataset


class _H5Array:
    """An HDF5 dataset that Dask can slice: opens the file for each block it reads."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        self.name = name
        with h5py.File(path, "r") as f:
            if name not in f:
                raise KeyError(f"dataset {name!r} not found in {path}; found {sorted(f.keys())}")
            self.shape: tuple[int, ...] = tuple(f[name].shape)
            dtype = f[name].dtype
            # h5py spells native little-endian as "<"; netCDF4 warns unless it is "="
            self.dtype: np.dtype[Any] = dtype.newbyteorder("=") if dtype.isnative else dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> npt.NDArray[Any]:
        with h5py.File(self.path, "r") as f:
            return np.asarray(f[self.name][key], dtype=self.dtype)


def _lazy(path: Path, name: str, chunks: tuple[int, ...]) -> da.Array:
    array = _H5Array(path, name)
    return da.from_array(
        array,
        chunks=chunks,
        name=f"h5-{uuid.uuid4().hex}",
        asarray=False,
        meta=np.empty((0,) * array.ndim, dtype=array.dtype),
    )


def _dataset_name(path: Path, preferred: str) -> str:
    with h5py.File(path, "r") as f:
        if preferred in f:
            return preferred
        names = [k for k, v in f.items() if isinstance(v, h5py.Dataset) and v.ndim == 2]
    if len(names) == 1:
        return names[0]
    raise KeyError(f"dataset {preferred!r} not found in {path}; found {names}")


def _resolve_chunks(
    chunks: Mapping[str, int] | None, grid: GeoGrid, n_dates: int
) -> dict[str, int]:
    merged = dict(DEFAULT_CHUNKS)
    for key, value in (chunks or {}).items():
        if key not in DEFAULT_CHUNKS:
            raise ValueError(
                f"chunks: unknown dimension {key!r}; use {sorted(DEFAULT_CHUNKS)} "
                "(-1 for the whole dimension)"
            )
        if not isinstance(value, int) or (value < 1 and value != -1):
            raise ValueError(f"chunks[{key!r}] = {value!r}; use a positive integer or -1")
        merged[key] = value
    sizes = {"time": n_dates, "y": grid.length, "x": grid.width}
    return {k: sizes[k] if v == -1 else min(v, sizes[k]) for k, v in merged.items()}


def _read_dates(ts_file: Path) -> npt.NDArray[np.datetime64]:
    from mintpy.utils import ptime

    with h5py.File(ts_file, "r") as f:
        raw = [d.decode() if isinstance(d, bytes) else str(d) for d in f["date"][:]]
    times = ptime.date_list2vector(raw)[0]
    return np.array(times, dtype="datetime64[ns]")


def _iso_date(value: str) -> str:
    from mintpy.utils import ptime

    return str(ptime.date_list2vector([value])[0][0].date().isoformat())


_METADATA_ATTRS: Final = {
    "PLATFORM": "platform",
    "ORBIT_DIRECTION": "orbit_direction",
    "WAVELENGTH": "radar_wavelength_m",
    "HEADING": "heading_deg",
    "CENTER_LINE_UTC": "center_line_utc_s",
    "PROCESSOR": "interferogram_processor",
}


def _global_attrs(
    products: MintpyProducts, grid: GeoGrid, provenance: Mapping[str, str]
) -> dict[str, Any]:
    vel_meta = _read_meta(products.velocity)
    ts_meta = _read_meta(products.timeseries)
    attrs: dict[str, Any] = {
        "Conventions": "CF-1.8",
        "title": "InSAR line-of-sight displacement time series",
        "source": "ISCE2 topsStack interferograms, MintPy small-baseline inversion",
        "sign_convention": "line of sight, positive towards the satellite (MintPy)",
        "pixel_registration": (
            "coordinates are pixel centres: y[i] = Y_FIRST + (i + 0.5) * Y_STEP, "
            "x[j] = X_FIRST + (j + 0.5) * X_STEP"
        ),
        "mintpy_timeseries_file": products.timeseries.name,
        "history": (
            f"{datetime.now(UTC).isoformat(timespec='seconds')}: exported from "
            f"{products.mintpy_dir} by insarflow {__version__}"
        ),
    }
    ref_date = ts_meta.get("REF_DATE") or vel_meta.get("REF_DATE")
    if ref_date:
        attrs["reference_date"] = _iso_date(ref_date)
    for key, name in (("REF_LAT", "reference_lat"), ("REF_LON", "reference_lon")):
        if key in ts_meta:
            attrs[name] = float(ts_meta[key])
    for key, name in (("REF_Y", "reference_y"), ("REF_X", "reference_x")):
        if key in ts_meta:
            attrs[name] = int(ts_meta[key])
    if "reference_lat" not in attrs and "reference_y" in attrs and grid.geographic:
        attrs["reference_lat"] = float(grid.y_centres()[attrs["reference_y"]])
        attrs["reference_lon"] = float(grid.x_centres()[attrs["reference_x"]])
    for key, name in _METADATA_ATTRS.items():
        if key in ts_meta:
            value = ts_meta[key]
            try:
                attrs[name] = float(value) if name.endswith(("_m", "_deg", "_s")) else value
            except ValueError:
                attrs[name] = value
    for key, value in provenance.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(
                f"provenance[{key!r}] = {value!r}: keys and values must be strings "
                "(serialise lists, e.g. with json.dumps)"
            )
        attrs[key] = value
    attrs.setdefault("insarflow_version", __version__)
    return attrs


def open_products(mintpy_dir: Path, *, chunks: Mapping[str, int] | None = None) -> xr.Dataset:
    """MintPy's geocoded outputs as one lazy, CF-annotated dataset (the exported layout)."""
    products = locate_products(Path(mintpy_dir))
    return _open(products, read_grid(products), chunks, {})


def _open(
    products: MintpyProducts,
    grid: GeoGrid,
    chunks: Mapping[str, int] | None,
    provenance: Mapping[str, str],
) -> xr.Dataset:
    times = _read_dates(products.timeseries)
    c = _resolve_chunks(chunks, grid, len(times))
    map_chunks = (c["y"], c["x"])
    cube_chunks = (c["time"], c["y"], c["x"])
    ts_array = _H5Array(products.timeseries, "timeseries")
    if ts_array.shape != (len(times), grid.length, grid.width):
        raise ValueError(
            f"{products.timeseries}: timeseries shape {ts_array.shape} does not match "
            f"{len(times)} dates x {grid.length} x {grid.width}"
        )

    def map_var(path: Path, name: str, attrs: dict[str, Any]) -> xr.DataArray:
        return xr.DataArray(_lazy(path, name, map_chunks), dims=("y", "x"), attrs=attrs)

    coh = {"units": "1", "valid_min": 0.0, "valid_max": 1.0}
    displacement = "line-of-sight displacement relative to the reference date and reference point"
    velocity = map_var(
        products.velocity,
        "velocity",
        {"units": VELOCITY_UNITS, "long_name": "line-of-sight velocity"},
    )
    timeseries = xr.DataArray(
        _lazy(products.timeseries, "timeseries", cube_chunks),
        dims=("time", "y", "x"),
        attrs={"units": "m", "long_name": displacement},
    )
    velocity_std = map_var(
        products.velocity,
        "velocityStd",
        {"units": VELOCITY_UNITS, "long_name": "standard deviation of line-of-sight velocity"},
    )
    mask = map_var(
        products.mask,
        _dataset_name(products.mask, "mask"),
        {"long_name": "reliable pixel mask (temporal coherence above MintPy's threshold)"},
    )
    reliable = mask.astype(bool)
    masked_note = {"comment": "NaN where mask is 0 (unreliable pixel)"}
    data_vars: dict[str, xr.DataArray] = {
        "velocity": velocity.where(reliable).assign_attrs(velocity.attrs, **masked_note),
        "velocity_unmasked": velocity.assign_attrs(
            long_name="line-of-sight velocity, unreliable pixels included"
        ),
        "velocity_std": velocity_std.where(reliable).assign_attrs(
            velocity_std.attrs, **masked_note
        ),
        "timeseries": timeseries.where(reliable).assign_attrs(timeseries.attrs, **masked_note),
        "timeseries_unmasked": timeseries.assign_attrs(
            long_name=f"{displacement}, unreliable pixels included"
        ),
        "temporal_coherence": map_var(
            products.temporal_coherence,
            _dataset_name(products.temporal_coherence, "temporalCoherence"),
            {"long_name": "temporal coherence of the network inversion", **coh},
        ),
        "avg_spatial_coherence": map_var(
            products.avg_spatial_coherence,
            _dataset_name(products.avg_spatial_coherence, "coherence"),
            {"long_name": "average spatial coherence of the interferograms", **coh},
        ),
        "mask": mask,
        "height": map_var(
            products.geometry,
            "height",
            {
                "units": "m",
                "long_name": "terrain height of the DEM used in processing",
                "standard_name": "height_above_reference_ellipsoid",
            },
        ),
    }
    with h5py.File(products.timeseries, "r") as f:
        if "bperp" in f and f["bperp"].shape == (len(times),):
            data_vars["perpendicular_baseline"] = xr.DataArray(
                np.asarray(f["bperp"][:], dtype=np.float32),
                dims=("time",),
                attrs={"units": "m", "long_name": "perpendicular baseline to the reference date"},
            )
    if grid.geographic:
        y_attrs = {"standard_name": "latitude", "units": "degrees_north", "axis": "Y"}
        x_attrs = {"standard_name": "longitude", "units": "degrees_east", "axis": "X"}
    else:
        y_attrs = {"standard_name": "projection_y_coordinate", "units": "m", "axis": "Y"}
        x_attrs = {"standard_name": "projection_x_coordinate", "units": "m", "axis": "X"}
    coords = {
        "time": ("time", times, {"standard_name": "time", "long_name": "acquisition date"}),
        "y": ("y", grid.y_centres(), {**y_attrs, "long_name": "pixel centre y"}),
        "x": ("x", grid.x_centres(), {**x_attrs, "long_name": "pixel centre x"}),
    }
    ds = xr.Dataset(data_vars, coords=coords)
    ds = ds.rio.write_crs(grid.epsg).rio.write_transform(grid.transform)
    ds.attrs.update(_global_attrs(products, grid, provenance))
    for name in ds.data_vars:
        ds[name].encoding["coordinates"] = "spatial_ref"
    return ds


# ---------------------------------------------------------------------------------------
# Idempotency and atomic replacement


def _fingerprint(files: Sequence[Path], extra: Mapping[str, Any]) -> str:
    """Hash of the inputs (name, size, mtime) and of everything else that shapes an output."""
    digest = hashlib.sha256()
    for path in files:
        st = path.stat()
        digest.update(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    digest.update(json.dumps({"layout": LAYOUT_VERSION, **extra}, sort_keys=True).encode())
    return digest.hexdigest()


def _zarr_fingerprint(store: Path) -> str | None:
    """Fingerprint of a complete store, None when it is absent or not a complete export."""
    try:
        meta = json.loads((store / ".zmetadata").read_text())["metadata"]
    except (OSError, ValueError, KeyError):
        return None
    if any(f"{name}/.zarray" not in meta for name in VARIABLES):
        return None
    value = meta.get(".zattrs", {}).get(FINGERPRINT_ATTR)
    return value if isinstance(value, str) else None


def _recover(final: Path) -> None:
    """Undo an interrupted swap and delete temporaries left by an interrupted export."""
    old = atomic.old_path(final)
    if old.exists() and not final.exists():
        old.rename(final)
        _log.warning("restored %s from an interrupted replacement", final)
    elif old.exists():
        atomic.remove(old)
    for stale in final.parent.glob(f"{final.name}{atomic.TMP_MARK}*"):
        _log.info("removing stale temporary output %s", stale)
        atomic.remove(stale)


@contextlib.contextmanager
def _atomic_output(final: Path) -> Iterator[Path]:
    """:func:`insarflow.atomic.replacing` after recovering from an interrupted export; a full
    disk is reported in plain words."""
    _recover(final)
    try:
        with atomic.replacing(final) as tmp:
            yield tmp
    except BaseException as exc:
        if is_disk_full(exc):
            kept = f"{final} is unchanged" if final.exists() else "nothing was written"
            raise disk_full_error(exc, final, kept=kept) from exc
        raise


# ---------------------------------------------------------------------------------------
# Writers


def _dataset_for_export(
    mintpy_dir: Path,
    provenance: Mapping[str, str],
    chunks: Mapping[str, int] | None,
) -> tuple[xr.Dataset, str]:
    products = locate_products(Path(mintpy_dir))
    ds = _open(products, read_grid(products), chunks, provenance)
    resolved = {k: int(v) for k, v in (chunks or {}).items()}
    fingerprint = _fingerprint(
        products.geocoded_files(),
        {"provenance": dict(provenance), "chunks": resolved, "insarflow": __version__},
    )
    ds.attrs[FINGERPRINT_ATTR] = fingerprint
    for name in ("time", "y", "x"):
        ds[name].encoding["_FillValue"] = None
    return ds, fingerprint


def export_zarr(
    mintpy_dir: Path,
    store: Path,
    *,
    provenance: Mapping[str, str],
    chunks: Mapping[str, int] | None = None,
    force: bool = False,
) -> Path:
    """Write MintPy's geocoded results to one zarr store (format 2, consolidated).

    The store is built at ``<store>.tmp-<uuid>`` and swapped into place, so a crash
    leaves the previous store intact. A store already written from the same inputs,
    provenance and chunks is kept (pass ``force`` to rewrite). When the results only
    extend the store along ``time`` (an update: its dates first, the same grid, variables
    and chunks), the new store is the old one hard-linked, with the new dates appended and
    only the variables whose values changed rewritten (:func:`_append_zarr`).
    """
    store = Path(store)
    ds, fingerprint = _dataset_for_export(mintpy_dir, provenance, chunks)
    _recover(store)
    old = _zarr_fingerprint(store)
    if not force and old == fingerprint:
        _log.info("zarr store %s is up to date; skipping", store)
        return store
    known = _dates_kept(store, ds) if old is not None and not force else None
    with _atomic_output(store) as tmp, dask.config.set(scheduler="threads"):
        if known is None:
            ds.to_zarr(tmp, mode="w-", zarr_format=2, consolidated=True, compute=True)
        else:
            rewritten = _append_zarr(store, tmp, ds, known)
    if known is None:
        _log.info("wrote zarr store %s", store)
    else:
        _log.info(
            "zarr store %s: %d date(s) appended; rewritten: %s",
            store,
            ds.sizes["time"] - known,
            ", ".join(rewritten) or "nothing else",
        )
    return store


def _dates_kept(store: Path, ds: xr.Dataset) -> int | None:
    """How many dates of ``ds`` the complete store ``store`` already holds, when ``ds`` only
    extends it along time (its dates first, the same variables, grid and spatial chunks);
    None when the store must be written afresh."""
    with xr.open_zarr(store) as old:
        n = old.sizes.get("time", 0)
        same = (
            set(old.data_vars) == set(ds.data_vars)
            and 0 < n <= ds.sizes["time"]
            and np.array_equal(old["time"].values, ds["time"].values[:n])
            and all(np.array_equal(old[c].values, ds[c].values) for c in ("y", "x"))
            and all(
                tuple(old[v].encoding.get("chunks", ()))[-2:] == tuple(ds[v].data.chunksize)[-2:]
                for v in ds.data_vars
                if ds[v].ndim >= 2
            )
        )
    return n if same else None


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _not_zarr(folder: str, names: list[str]) -> list[str]:
    """Names in a zarr (format 2) store that are not zarr's: neither metadata (``.z*``), a
    variable's folder nor a chunk (``0.1.2``)."""
    return [
        n for n in names if not (n.startswith(".z") or n[0].isdigit() or Path(folder, n).is_dir())
    ]


def _differs(old: xr.DataArray, new: xr.DataArray) -> bool:
    """Whether two arrays differ anywhere (NaN equal to NaN), read block by block up to the
    first difference (after a re-inversion, usually the first block)."""
    a = da.asarray(old.data)
    b = da.asarray(new.data).rechunk(a.chunks)
    for index in np.ndindex(*a.numblocks):
        x, y = dask.compute(a.blocks[index], b.blocks[index])
        if not np.array_equal(x, y, equal_nan=np.issubdtype(x.dtype, np.floating)):
            return True
    return False


def _append_zarr(store: Path, tmp: Path, ds: xr.Dataset, known: int) -> list[str]:
    """Build at ``tmp`` the store of ``ds`` from ``store``, which holds its first ``known``
    dates: the files are hard links (zarr replaces a file it writes, so ``store`` never
    changes), the new dates are appended along ``time``, and of the rest only what differs
    is rewritten: a re-inverted network changes earlier dates and the maps too. Returns the
    variables rewritten. Time chunks keep the store's length."""
    import zarr

    shutil.copytree(store, tmp, copy_function=_link_or_copy, ignore=_not_zarr)
    kept = ds.isel(time=slice(0, known))
    rewritten = []
    with xr.open_zarr(store) as old:
        for name in ds.data_vars:
            if _differs(old[name], kept[name] if "time" in ds[name].dims else ds[name]):
                rewritten.append(str(name))
    plain = ds.copy()
    for variable in plain.variables.values():
        variable.encoding = {}  # the store's own encodings apply
    by_time = [n for n in rewritten if "time" in ds[n].dims]
    if by_time:
        region = plain[by_time].isel(time=slice(0, known))
        region = region.drop_vars([c for c in region.coords if "time" not in region[c].dims])
        region.to_zarr(tmp, region={"time": slice(0, known)}, consolidated=False)
    maps = [n for n in rewritten if "time" not in ds[n].dims]
    if maps:
        plain[maps].to_zarr(tmp, mode="a", consolidated=False)
    if ds.sizes["time"] > known:
        timed = [str(n) for n in ds.data_vars if "time" in ds[n].dims]
        plain[timed].isel(time=slice(known, None)).to_zarr(
            tmp, append_dim="time", consolidated=False
        )
    group = zarr.open_group(tmp, mode="r+", zarr_format=2)
    group.attrs.clear()
    group.attrs.update(dict(ds.attrs))
    zarr.consolidate_metadata(tmp, zarr_format=2)
    return rewritten


def _netcdf_fingerprint(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as f:
            value = f.attrs.get(FINGERPRINT_ATTR)
    except OSError:
        return None
    if isinstance(value, bytes):
        value = value.decode()
    return value if isinstance(value, str) else None


def netcdf_engine() -> Literal["h5netcdf", "netcdf4"]:
    """The xarray engine that writes NetCDF-4 here: h5netcdf, else netCDF4."""
    import importlib.util

    if importlib.util.find_spec("h5netcdf") is not None:
        return "h5netcdf"
    if importlib.util.find_spec("netCDF4") is not None:
        return "netcdf4"
    raise ImportError(
        "NetCDF export needs h5netcdf or netCDF4: pip install h5netcdf "
        "(or choose formats zarr/geotiff)"
    )


def export_netcdf(
    mintpy_dir: Path,
    path: Path,
    *,
    provenance: Mapping[str, str],
    chunks: Mapping[str, int] | None = None,
    force: bool = False,
) -> Path:
    """Write the zarr dataset as one NetCDF-4 file (HDF5 chunks = the zarr chunks, zlib)."""
    path = Path(path)
    engine = netcdf_engine()
    ds, fingerprint = _dataset_for_export(mintpy_dir, provenance, chunks)
    _recover(path)
    if not force and _netcdf_fingerprint(path) == fingerprint:
        _log.info("NetCDF file %s is up to date; skipping", path)
        return path
    encoding: dict[str, dict[str, Any]] = {}
    for name, var in ds.data_vars.items():
        enc: dict[str, Any] = {"zlib": True, "complevel": 4}
        if var.chunks:
            enc["chunksizes"] = tuple(c[0] for c in var.chunks)
        encoding[str(name)] = enc
    with _atomic_output(path) as tmp, dask.config.set(scheduler="threads"):
        ds.to_netcdf(tmp, engine=engine, encoding=encoding, compute=True)
    _log.info("wrote NetCDF file %s", path)
    return path


def _geotiff_fingerprint(path: Path) -> str | None:
    import rasterio
    import rasterio.errors

    if not path.is_file():
        return None
    try:
        with rasterio.open(path) as src:
            return src.tags().get(FINGERPRINT_ATTR.upper())
    except rasterio.errors.RasterioIOError:
        return None


def export_geotiff(mintpy_dir: Path, out_dir: Path, *, force: bool = False) -> list[Path]:
    """The maps of :data:`GEOTIFF_NAMES` as Cloud-Optimized GeoTIFF.

    Values, masking and units are those of the zarr variables of the same name (velocity
    and its standard deviation masked, ``m year-1``); float maps use NaN as nodata, the
    mask is a byte band of 0/1.
    """
    import rasterio

    products = locate_products(Path(mintpy_dir))
    grid = read_grid(products)
    ds = _open(products, grid, None, {})
    out_dir = Path(out_dir)
    fingerprint = _fingerprint(products.geocoded_files(), {"insarflow": __version__})
    written: list[Path] = []
    for var, name in GEOTIFF_NAMES.items():
        final = out_dir / name
        _recover(final)
        if not force and _geotiff_fingerprint(final) == fingerprint:
            _log.info("GeoTIFF %s is up to date; skipping", final)
            written.append(final)
            continue
        is_mask = var == "mask"
        with dask.config.set(scheduler="threads"):
            data = ds[var].values.astype(np.uint8 if is_mask else np.float32)
        profile = {
            "driver": "COG",
            "width": grid.width,
            "height": grid.length,
            "count": 1,
            "dtype": "uint8" if is_mask else "float32",
            "crs": f"EPSG:{grid.epsg}",
            "transform": grid.transform,
            "nodata": None if is_mask else np.nan,
            "compress": "DEFLATE",
            "predictor": 2 if is_mask else 3,
            "blocksize": 256,
            "overviews": "AUTO",
        }
        attrs = ds[var].attrs
        band_tags = {"long_name": attrs["long_name"]}
        if "units" in attrs:
            band_tags["units"] = attrs["units"]
        if "comment" in attrs:
            band_tags["comment"] = attrs["comment"]
        with _atomic_output(final) as tmp, rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data, 1)
            dst.set_band_description(1, var)
            dst.update_tags(1, **band_tags)
            tags = {FINGERPRINT_ATTR.upper(): fingerprint, "insarflow_version": __version__}
            if "reference_date" in ds.attrs:
                tags["reference_date"] = ds.attrs["reference_date"]
            dst.update_tags(**tags)
        _log.info("wrote GeoTIFF %s", final)
        written.append(final)
    return written


def export_products(
    mintpy_dir: Path,
    out_dir: Path,
    formats: Sequence[ProductFormat],
    provenance: Mapping[str, str],
    *,
    chunks: Mapping[str, int] | None = None,
    force: bool = False,
) -> dict[str, Path]:
    """Write the requested products into ``out_dir``.

    Returns a mapping product -> path: ``zarr`` (``timeseries.zarr``), ``netcdf``
    (``timeseries.nc``) and ``geotiff_<name>`` for each map of :data:`GEOTIFF_NAMES`.
    """
    unknown = sorted(set(formats) - {"zarr", "geotiff", "netcdf"})
    if unknown:
        raise ValueError(f"formats: unknown {unknown}; choose from zarr, geotiff, netcdf")
    out_dir = Path(out_dir)
    result: dict[str, Path] = {}
    if "zarr" in formats:
        result["zarr"] = export_zarr(
            mintpy_dir, out_dir / ZARR_NAME, provenance=provenance, chunks=chunks, force=force
        )
    if "netcdf" in formats:
        result["netcdf"] = export_netcdf(
            mintpy_dir, out_dir / NETCDF_NAME, provenance=provenance, chunks=chunks, force=force
        )
    if "geotiff" in formats:
        for path in export_geotiff(mintpy_dir, out_dir, force=force):
            result[f"geotiff_{path.stem}"] = path
    return result


@task(name="export-products")
def export_products_task(
    mintpy_dir: Path,
    out_dir: Path,
    formats: Sequence[ProductFormat],
    provenance: Mapping[str, str],
    chunks: Mapping[str, int] | None = None,
    force: bool = False,
) -> dict[str, Path]:
    """Prefect task: :func:`export_products`."""
    return export_products(mintpy_dir, out_dir, formats, provenance, chunks=chunks, force=force)


__all__ = [
    "DEFAULT_CHUNKS",
    "GeoGrid",
    "MintpyProducts",
    "export_geotiff",
    "export_netcdf",
    "export_products",
    "export_products_task",
    "export_zarr",
    "final_timeseries_name",
    "locate_products",
    "netcdf_engine",
    "open_products",
    "read_grid",
]
