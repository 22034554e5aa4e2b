"""What the simulator does when a run-file line runs: ISCE2 products from the synthetic scene.

``install_simulator_bin(dest)`` writes executable stand-ins for the scripts topsStack run
files call (``SentinelWrapper.py``, ``subsetReference.py``, ``invertMisreg.py``,
``extractCommonValidRegion.py``, ``computeIon.py``, ``invertIon.py``) and for
``stackSentinel.py``; with ``dest`` first on PATH the run files run unchanged.

Each ``[Function-N]`` of a config reads its inputs at the paths the config names (and fails,
naming the missing file and the step that makes it, when they are absent), then writes its
outputs at the real ISCE2 paths and formats. Burst rasters are stored on the multilooked
grid; product XML timing and the ``.full`` virtual mosaics describe the full-resolution
product. Products depend only on the scene spec and the inputs, so the same seed gives
byte-identical files.
"""

from __future__ import annotations

import argparse
import re
import sys
import traceback
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import numpy.typing as npt

from insarflow import atomic
from insarflow.simulator.products import (
    BurstFile,
    Tile,
    burst_slices,
    overlap_slices,
    swath_slices,
    tops_product_xml,
    write_tops_product,
    write_virtual_full,
)
from insarflow.simulator.scene import (
    SceneSpec,
    SceneTruth,
    make_truth,
    pair_noise,
    unwrapping_error_cycles,
)
from insarflow.simulator.stack_sentinel import Safe, find_orbit, safe_fields
from insarflow.simulator.stack_sentinel import main as stack_sentinel_main
from insarflow.tasks.isce_io import (
    IsceConfigError,
    is_complete,
    read_isce_config,
    read_isce_info,
    read_isce_raster,
    write_isce_raster,
)

Array = npt.NDArray[np.generic]
Params = Mapping[str, str]
_PAIR = re.compile(r"^(\d{8})[_-](\d{8})$")
# Doppler centroid difference between the two looks of a Sentinel-1 IW burst overlap (Hz):
# it turns the ESD double-difference phase into azimuth misregistration.
OVERLAP_DOPPLER_DIFFERENCE_HZ = 4800.0
# Pixels whose coherence (5 x 5 estimate, smoothed 3 x 3) is below this are masked before
# unwrapping, so decorrelated water separates the land into connected components.
UNWRAP_MASK_COHERENCE = 0.3
_DATE = re.compile(r"^\d{8}$")


class SimulatorStepError(RuntimeError):
    """A step cannot run; the message names the file or value and what to do."""


# ----------------------------------------------------------------------------- stack context


@dataclass
class Stack:
    """The stack directory a step works in, with its scene."""

    root: Path
    spec: SceneSpec

    @cached_property
    def truth(self) -> SceneTruth:
        return make_truth(self.spec)

    @classmethod
    def find(cls, inside: Path) -> Stack:
        """The stack containing ``inside`` (found by its ``simulator/scene.json``)."""
        start = Path(inside).absolute()
        for candidate in (start, *start.parents):
            scene = candidate / "simulator" / "scene.json"
            if scene.is_file():
                return cls(candidate, SceneSpec.load(scene))
        raise SimulatorStepError(
            f"no simulator/scene.json found above {start}: this is not a stack written by the "
            "simulator's stackSentinel.py (run it first, or use real ISCE2)"
        )

    def date_of(self, directory: str | Path) -> str:
        """The date a product directory holds (``reference`` -> the reference date)."""
        name = Path(str(directory).rstrip("/")).name
        if name == "reference":
            return self.spec.reference
        if _DATE.match(name):
            return name
        raise SimulatorStepError(f"cannot tell the date of product directory {directory}")

    def pair_of(self, path: str | Path) -> tuple[str, str]:
        """The (date1, date2) of the innermost ``D1_D2`` (or ``D1-D2``) directory in ``path``."""
        for part in reversed(Path(path).parts):
            if m := _PAIR.match(part):
                return m.group(1), m.group(2)
        raise SimulatorStepError(f"cannot tell the pair (YYYYMMDD_YYYYMMDD) from {path}")


def _swaths(product_dir: Path, producer: str) -> list[int]:
    found = sorted(int(p.name[2]) for p in product_dir.glob("IW[1-3].xml"))
    if not found:
        raise SimulatorStepError(f"no IW*.xml in {product_dir}: run {producer} first")
    return found


def _need(path: Path, producer: str) -> Path:
    """Fail unless ``path`` is a complete raster (or, without XML, an existing file)."""
    ok = is_complete(path) if Path(f"{path}.xml").exists() else path.exists()
    if not ok:
        raise SimulatorStepError(f"input {path} is missing or incomplete: run {producer} first")
    return path


def _bool(value: str) -> bool:
    return value.strip().lower() == "true"


def _write(
    path: Path,
    data: Array,
    scheme: str,
    *,
    family: str = "image",
    image_type: str | None = None,
    description: str | None = None,
) -> None:
    write_isce_raster(
        path,
        np.ascontiguousarray(data),
        scheme=scheme,  # type: ignore[arg-type]
        family=family,
        image_type=image_type,
        description=description,
    )


def _write_slc(path: Path, data: Array) -> None:
    _write(path, data.astype(np.complex64), "BIP", family="slcimage", image_type="slc")


def _write_int(path: Path, data: Array) -> None:
    _write(path, data.astype(np.complex64), "BIP", family="intimage", image_type="cpx")


def _box(a: Array, size: int) -> npt.NDArray[np.complex128]:
    """Mean over a ``size`` x ``size`` window (near the edges, over the pixels available)."""
    out = np.asarray(a, dtype=np.complex128)
    half = size // 2
    for axis in (0, 1):
        n = out.shape[axis]
        zero = np.zeros_like(out.take([0], axis=axis))
        csum = np.cumsum(np.concatenate([zero, out], axis=axis), axis=axis)
        idx = np.arange(n)
        hi = np.minimum(idx + half + 1, n)
        lo = np.maximum(idx - half, 0)
        counts = np.expand_dims(hi - lo, axis=1 - axis)
        out = (csum.take(hi, axis=axis) - csum.take(lo, axis=axis)) / counts
    return out


def coherence_estimate(ifg: Array, size: int = 5) -> npt.NDArray[np.float32]:
    """Phase-only coherence estimate |<exp(i phase)>| in a ``size`` window."""
    z = np.asarray(ifg, dtype=np.complex128)
    mag = np.abs(z)
    unit = np.divide(z, mag, out=np.zeros_like(z), where=mag > 0)
    return np.abs(_box(unit, size)).astype(np.float32)


def goldstein(ifg: Array, alpha: float, psize: int = 32) -> npt.NDArray[np.complex64]:
    """Goldstein-Werner adaptive filter (overlapping patches, triangular blending)."""
    z = np.asarray(ifg, dtype=np.complex128)
    if alpha <= 0:
        return z.astype(np.complex64)
    length, width = z.shape
    step = psize // 2
    rows = max(1, -(-(length - psize) // step) + 1) if length > psize else 1
    cols = max(1, -(-(width - psize) // step) + 1) if width > psize else 1
    big = np.zeros(((rows - 1) * step + psize, (cols - 1) * step + psize), dtype=np.complex128)
    big[:length, :width] = z
    tri = 1.0 - np.abs(np.arange(psize) - (psize - 1) / 2) / (psize / 2)
    weight2d = np.outer(tri, tri)
    out = np.zeros_like(big)
    wsum = np.zeros(big.shape)
    patches = np.lib.stride_tricks.sliding_window_view(big, (psize, psize))[::step, ::step]
    spectra = np.fft.fft2(patches)
    mag = np.abs(spectra)
    smooth = np.zeros_like(mag)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            smooth += np.roll(np.roll(mag, dy, axis=-2), dx, axis=-1)
    peak = smooth.max(axis=(-2, -1), keepdims=True)
    resp = np.divide(smooth, peak, out=np.zeros_like(smooth), where=peak > 0) ** alpha
    filtered = np.fft.ifft2(spectra * resp)
    for i in range(filtered.shape[0]):
        for j in range(filtered.shape[1]):
            y, x = i * step, j * step
            out[y : y + psize, x : x + psize] += filtered[i, j] * weight2d
            wsum[y : y + psize, x : x + psize] += weight2d
    res = np.divide(out, wsum, out=np.zeros_like(out), where=wsum > 0)[:length, :width]
    return res.astype(np.complex64)


def resample_mean(
    a: Array, shape: tuple[int, int]
) -> npt.NDArray[np.float64] | npt.NDArray[np.complex128]:
    """Average ``a`` onto a coarser grid of ``shape`` covering the same extent."""
    arr = np.asarray(a)
    length, width = arr.shape
    if shape[0] < 1 or shape[1] < 1:
        raise SimulatorStepError(f"a {length} x {width} scene is too small for {shape} looks")
    ri = np.minimum((np.arange(length) * shape[0]) // length, shape[0] - 1)
    ci = np.minimum((np.arange(width) * shape[1]) // width, shape[1] - 1)
    flat = (ri[:, None] * shape[1] + ci[None, :]).ravel()
    count = np.bincount(flat, minlength=shape[0] * shape[1])
    dtype = np.complex128 if np.iscomplexobj(arr) else np.float64
    total = np.zeros(shape[0] * shape[1], dtype=dtype)
    np.add.at(total, flat, arr.ravel())
    return (total / np.maximum(count, 1)).reshape(shape)


def resample_nearest(a: Array, shape: tuple[int, int]) -> Array:
    """Sample ``a`` on a grid of ``shape`` covering the same extent (nearest neighbour)."""
    arr = np.asarray(a)
    length, width = arr.shape
    ri = np.minimum(((np.arange(shape[0]) + 0.5) * length / shape[0]).astype(int), length - 1)
    ci = np.minimum(((np.arange(shape[1]) + 0.5) * width / shape[1]).astype(int), width - 1)
    return arr[np.ix_(ri, ci)]


# ----------------------------------------------------------------------------- mosaics


def _tiles(stack: Stack, swaths: list[int]) -> list[tuple[int, int, slice, slice]]:
    """(swath, burst number, rows, cols) of every burst tile of the multilooked grid."""
    cols = swath_slices(stack.spec, swaths)
    return [
        (s, k, rows, cols[s])
        for s in swaths
        for k, rows in enumerate(burst_slices(stack.spec), start=1)
    ]


def _read_bursts(
    stack: Stack, directory: Path, swaths: list[int], name: str, producer: str
) -> Array:
    """Stitch ``directory/IW<s>/<name % k>`` burst files back into the full scene."""
    mosaic: Array | None = None
    for s, k, rows, cols in _tiles(stack, swaths):
        path = _need(directory / f"IW{s}" / (name % k), producer)
        data = read_isce_raster(path)
        if mosaic is None:
            mosaic = np.zeros(
                (data.shape[0], stack.spec.length, stack.spec.width), dtype=data.dtype
            )
        mosaic[:, rows, cols] = data
    assert mosaic is not None
    return mosaic


def _write_product(stack: Stack, directory: Path, day: str, swaths: list[int], name: str) -> None:
    cols = swath_slices(stack.spec, swaths)
    height = float(stack.truth.topography.mean())
    for s in swaths:
        bursts = [
            BurstFile(
                directory / f"IW{s}" / (name % k),
                cols[s].stop - cols[s].start,
                rows.stop - rows.start,
            )
            for k, rows in enumerate(burst_slices(stack.spec), start=1)
        ]
        write_tops_product(directory / f"IW{s}.xml", stack.spec, day, s, cols[s], bursts, height)


def _overlap_names(stack: Stack) -> list[tuple[int, slice]]:
    """(burst number k, rows) of each overlap between bursts k and k+1."""
    return list(enumerate(overlap_slices(stack.spec), start=1))


def _write_overlap_slcs(
    stack: Stack, mosaic: Array, out_dir: Path, swaths: list[int], day: str
) -> None:
    """Top/bottom overlap bursts of ``mosaic`` under ``out_dir/overlap`` with their product XML."""
    if stack.spec.bursts_per_swath < 2:
        raise SimulatorStepError(
            "NESD needs at least two bursts per swath; the scene has "
            f"{stack.spec.bursts_per_swath} "
            "(use -C geometry)"
        )
    cols = swath_slices(stack.spec, swaths)
    height = float(stack.truth.topography.mean())
    for s in swaths:
        for side, xml_side in (("top", "top"), ("bot", "bottom")):
            files = []
            for k, rows in _overlap_names(stack):
                path = out_dir / "overlap" / f"IW{s}" / f"burst_{side}_{k:02d}_{k + 1:02d}.slc"
                _write_slc(path, mosaic[0, rows, cols[s]])
                files.append(BurstFile(path, cols[s].stop - cols[s].start, rows.stop - rows.start))
            _write_overlap_product(
                stack, out_dir / "overlap" / f"IW{s}_{xml_side}.xml", day, s, cols[s], files, height
            )


def _write_overlap_product(
    stack: Stack,
    path: Path,
    day: str,
    swath: int,
    cols: slice,
    files: list[BurstFile],
    height: float,
) -> None:
    # an overlap product lists one burst per overlap; reuse the burst timing of the first bursts
    spec = stack.spec.replace(bursts_per_swath=len(files))
    atomic.write_text(
        path, tops_product_xml(spec, day, swath, cols, files, height), skip_unchanged=True
    )


# ----------------------------------------------------------------------------- functions


def sentinel1_tops(stack: Stack, p: Params) -> None:
    """Unpack a SAFE: ``IW<n>.xml`` and ``IW<n>/burst_NN.slc`` per requested swath."""
    zips = p["dirname"].split()
    for z in zips:
        if not Path(z).is_file():
            raise SimulatorStepError(f"SAFE {z} not found (dirname in the config): restore it")
        try:
            with zipfile.ZipFile(z) as zf:
                if not any(n.endswith("manifest.safe") for n in zf.namelist()):
                    raise SimulatorStepError(f"SAFE {z} has no manifest.safe: download it again")
        except zipfile.BadZipFile:
            raise SimulatorStepError(f"SAFE {z} is not a valid zip: download it again") from None
    platform, start, stop = safe_fields(zips[0])
    day = start.strftime("%Y%m%d")
    if day not in stack.spec.dates:
        raise SimulatorStepError(f"{zips[0]} is not an acquisition of the synthetic scene")
    if "orbitdir" in p:
        if find_orbit(Safe(zips, platform, day, start, stop), p["orbitdir"]) is None:
            raise SimulatorStepError(f"no orbit file covering {day} in {p['orbitdir']}")
    elif not Path(p.get("orbit", "")).is_file():
        raise SimulatorStepError(f"orbit file {p.get('orbit')} not found")
    if p.get("pol", "vv").lower() not in ("vv", "vh"):
        raise SimulatorStepError(f"polarization {p['pol']} is not in the 1SDV SAFE (use vv or vh)")
    if "bbox" in p:
        _check_bbox(stack, p["bbox"])
    swaths = sorted(int(s) for s in p["swaths"].split())
    missing = [s for s in swaths if s not in stack.spec.swaths]
    if missing:
        raise SimulatorStepError(
            f"swaths {missing} are not in the synthetic SAFE (has {stack.spec.swaths})"
        )
    outdir = Path(p["outdir"])
    slc = stack.truth.slc(day)
    for s, k, rows, cols in _tiles(stack, swaths):
        _write_slc(outdir / f"IW{s}" / f"burst_{k:02d}.slc", slc[rows, cols])
    _write_product(stack, outdir, day, swaths, "burst_%02d.slc")
    print(f"Sentinel1_TOPS: unpacked {day} swaths {swaths} into {outdir}")


def _check_bbox(stack: Stack, text: str) -> None:
    """Fail like ISCE2 on a bbox that is not S N W E, and on one that misses the scene."""
    try:
        south, north, west, east = (float(v) for v in text.split())
    except ValueError:
        raise SimulatorStepError(f"bbox {text!r} must be four numbers S N W E") from None
    if not -90 <= south < north <= 90:
        raise SimulatorStepError(
            f"IndexError: too many indices for array (bbox {text!r} is not S N W E: latitudes "
            "must come first, south before north)"
        )
    lat, lon = stack.truth.lat, stack.truth.lon
    if north < lat.min() or south > lat.max() or east < lon.min() or west > lon.max():
        raise SimulatorStepError(
            f"bbox {text!r} does not overlap the synthetic scene (lat {lat.min():.3f}.."
            f"{lat.max():.3f}, lon {lon.min():.3f}..{lon.max():.3f}): no burst to unpack"
        )


def topo(stack: Stack, p: Params) -> None:
    """Reference geometry per burst: lat, lon, hgt, los, shadowMask, incLocal."""
    ref = Path(p["reference"])
    swaths = _swaths(ref, "run_01 (Sentinel1_TOPS of the reference)")
    dem = Path(p["dem"])
    if not dem.is_file():
        raise SimulatorStepError(f"DEM {dem} not found (dem in the config): create or fix the path")
    t, spec = stack.truth, stack.spec
    look = np.degrees(
        np.arcsin(
            6371000.0 / (6371000.0 + spec.satellite_height_m) * np.sin(np.radians(t.incidence_deg))
        )
    )
    ground_step = spec.range_looks * spec.range_pixel_size_m / np.sin(np.radians(t.incidence_deg))
    slope = np.degrees(np.arctan(np.gradient(t.topography, axis=1) / ground_step))
    layers: dict[str, tuple[Array, str, str]] = {
        "lat": (t.lat, "BIP", "Pixel-by-pixel latitude in degrees."),
        "lon": (t.lon, "BIP", "Pixel-by-pixel longitude in degrees."),
        "hgt": (t.topography, "BIP", "Pixel-by-pixel height in meters."),
        "los": (
            np.stack([t.incidence_deg, np.full(t.shape, t.los_azimuth_deg)]).astype(np.float32),
            "BIL",
            "Two channel Line-Of-Sight geometry image (all angles in degrees).",
        ),
        "shadowMask": (np.zeros(t.shape, np.uint8), "BIL", "Radar shadow-layover mask."),
        "incLocal": (
            np.stack([look, t.incidence_deg - slope]).astype(np.float32),
            "BIL",
            "Two channel angle file.",
        ),
    }
    geom = Path(p["geom_referenceDir"])
    for s, k, rows, cols in _tiles(stack, swaths):
        for name, (data, scheme, desc) in layers.items():
            tile = data[..., rows, cols]
            _write(geom / f"IW{s}" / f"{name}_{k:02d}.rdr", tile, scheme, description=desc)
    print(f"topo: geometry of swaths {swaths} in {geom}")


def compute_baseline(stack: Stack, p: Params) -> None:
    """Average perpendicular/parallel baseline per swath, as ISCE2's text file."""
    ref, sec = Path(p["reference"]), Path(p["secondary"])
    swaths = _swaths(ref, "run_01 (unpack_topo_reference)")
    sec_swaths = _swaths(sec, "unpack_secondary_slc")
    if sec_swaths != swaths:
        raise SimulatorStepError(f"{sec} has swaths {sec_swaths}, reference has {swaths}")
    day = stack.date_of(sec)
    bperp, bpar = stack.truth.bperp(day), stack.truth.bpar(day)
    text = "".join(
        f"swath: IW{s}\nBperp (average): {bperp}\nBpar (average): {bpar}\n" for s in swaths
    )
    atomic.write_text(Path(p["baseline_file"]), text, skip_unchanged=True)
    print(f"computeBaseline: {day} Bperp {bperp:.2f} m")


def _read_misreg(path: str | None) -> float:
    if path and Path(path).is_file():
        text = Path(path).read_text().split()
        return float(text[0]) if text else 0.0
    return 0.0


def geo2rdr(stack: Stack, p: Params) -> None:
    """Range/azimuth offsets of a secondary (full bursts or burst overlaps)."""
    sec = Path(p["secondary"])
    swaths = _swaths(sec, "unpack_secondary_slc")
    geom = Path(p["geom_referenceDir"])
    coreg = Path(p["coregSLCdir"])
    day = stack.date_of(sec)
    az = _read_misreg(p.get("azimuth_misreg"))
    rg = _read_misreg(p.get("range_misreg"))
    spec = stack.spec
    rows = np.linspace(0, 1, spec.length)[:, None] * np.ones((1, spec.width))
    cols = np.ones((spec.length, 1)) * np.linspace(0, 1, spec.width)[None, :]
    bperp = stack.truth.bperp(day)
    az_off = (az + 1e-3 * bperp / 100 * cols).astype(np.float32)
    rg_off = (rg + 2e-2 * bperp / 100 * (cols - 0.5) + 1e-3 * rows).astype(np.float32)
    colmap = swath_slices(spec, swaths)
    if _bool(p.get("overlap", "False")):
        ref = Path(p["reference"])
        for s in swaths:
            _need(ref / "overlap" / f"IW{s}_top.xml", "run_04 (subsetReference.py)")
            for k, orows in _overlap_names(stack):
                _need(
                    geom / "overlap" / f"IW{s}" / f"lat_top_{k:02d}_{k + 1:02d}.rdr",
                    "subsetReference.py",
                )
                for side in ("top", "bot"):
                    base = coreg / "overlap" / f"IW{s}"
                    _write(
                        base / f"azimuth_{side}_{k:02d}_{k + 1:02d}.off",
                        az_off[orows, colmap[s]],
                        "BIP",
                    )
                    _write(
                        base / f"range_{side}_{k:02d}_{k + 1:02d}.off",
                        rg_off[orows, colmap[s]],
                        "BIP",
                    )
    else:
        for s, k, brows, bcols in _tiles(stack, swaths):
            _need(geom / f"IW{s}" / f"lat_{k:02d}.rdr", "run_01 (topo)")
            _write(coreg / f"IW{s}" / f"azimuth_{k:02d}.off", az_off[brows, bcols], "BIP")
            _write(coreg / f"IW{s}" / f"range_{k:02d}.off", rg_off[brows, bcols], "BIP")
    print(f"geo2rdr: offsets of {day} in {coreg}")


def resamp_with_carrier(stack: Stack, p: Params) -> None:
    """Resample a secondary onto the reference grid (full bursts or burst overlaps)."""
    sec = Path(p["secondary"])
    swaths = _swaths(sec, "unpack_secondary_slc")
    coreg = Path(p["coregdir"])
    day = stack.date_of(sec)
    mosaic = _read_bursts(stack, sec, swaths, "burst_%02d.slc", "unpack_secondary_slc")
    if _bool(p.get("overlap", "False")):
        for s in swaths:
            for k, _ in _overlap_names(stack):
                _need(
                    coreg / "overlap" / f"IW{s}" / f"azimuth_top_{k:02d}_{k + 1:02d}.off",
                    "overlap_geo2rdr",
                )
        _write_overlap_slcs(stack, mosaic, coreg, swaths, day)
    else:
        for s, k, rows, cols in _tiles(stack, swaths):
            _need(coreg / f"IW{s}" / f"azimuth_{k:02d}.off", "fullBurst_geo2rdr")
            _need(coreg / f"IW{s}" / f"range_{k:02d}.off", "fullBurst_geo2rdr")
            _write_slc(coreg / f"IW{s}" / f"burst_{k:02d}.slc", mosaic[0, rows, cols])
        _write_product(stack, coreg, day, swaths, "burst_%02d.slc")
    print(f"resamp_withCarrier: {day} resampled into {coreg}")


def generate_igram(stack: Stack, p: Params) -> None:
    """Burst interferograms reference x conj(secondary) with the pair's decorrelation."""
    ref, sec = Path(p["reference"]), Path(p["secondary"])
    d1, d2 = stack.date_of(ref), stack.date_of(sec)
    out = Path(p["interferogram"])
    prefix = p.get("interferogram_prefix", "fine")
    suffix1, suffix2 = p.get("reference_suffix", ""), p.get("secondary_suffix", "")
    noise = pair_noise(stack.truth, d1, d2)
    if _bool(p.get("overlap", "False")):
        swaths = sorted(int(x.name[2]) for x in (ref / "overlap").glob("IW[1-3]_top.xml"))
        if not swaths:
            raise SimulatorStepError(
                f"no overlap products in {ref}/overlap: run the overlap steps first"
            )
        cols = swath_slices(stack.spec, swaths)
        for s in swaths:
            for k, rows in _overlap_names(stack):
                for side in ("top", "bot"):
                    name = f"burst_{side}_{k:02d}_{k + 1:02d}.slc"
                    a = read_isce_raster(
                        _need(ref / "overlap" / f"IW{s}" / name, "overlap_resample"), 1
                    )
                    b = read_isce_raster(
                        _need(sec / "overlap" / f"IW{s}" / name, "overlap_resample"), 1
                    )
                    ifg = a * np.conj(b) * noise[rows, cols[s]]
                    _write_int(
                        out / "overlap" / f"IW{s}" / f"{prefix}_{side}_{k:02d}_{k + 1:02d}.int", ifg
                    )
    else:
        swaths = _swaths(ref, "the unpacking/resampling of " + d1)
        producer = "resampling/subband"
        a_all = _read_bursts(stack, ref, swaths, f"burst_%02d{suffix1}.slc", producer)[0]
        b_all = _read_bursts(stack, sec, swaths, f"burst_%02d{suffix2}.slc", producer)[0]
        ifg = a_all * np.conj(b_all) * noise
        for s, k, rows, tile_cols in _tiles(stack, swaths):
            _write_int(out / f"IW{s}" / f"{prefix}_{k:02d}.int", ifg[rows, tile_cols])
        _write_product(stack, out, d1, swaths, f"{prefix}_%02d.int")
    print(f"generateIgram: {d1}_{d2} in {out}")


def overlap_with_dem(stack: Stack, p: Params) -> None:
    """ESD double-difference interferograms of the burst overlaps."""
    ifg_dir = Path(p["interferogram"]) / "overlap"
    out = Path(p["overlap_dir"])
    swaths = sorted(int(d.name[2]) for d in ifg_dir.glob("IW[1-3]"))
    if not swaths:
        raise SimulatorStepError(
            f"no overlap interferograms in {ifg_dir}: run generateIgram (overlap) first"
        )
    for s in swaths:
        for k, _ in _overlap_names(stack):
            top = read_isce_raster(
                _need(ifg_dir / f"IW{s}" / f"int_top_{k:02d}_{k + 1:02d}.int", "generateIgram"), 1
            )
            bot = read_isce_raster(
                _need(ifg_dir / f"IW{s}" / f"int_bot_{k:02d}_{k + 1:02d}.int", "generateIgram"), 1
            )
            dd = top * np.conj(bot)
            _write_int(out / f"IW{s}" / f"overlap_{k:02d}.int", dd)
            _write(out / f"IW{s}" / f"overlap_{k:02d}.cor", coherence_estimate(top, 3), "BIP")


def _misreg_text(values: Array, threshold: str) -> str:
    v = np.asarray(values, dtype=np.float64)
    median, mean, std = (float(f(v)) if v.size else 0.0 for f in (np.median, np.mean, np.std))
    return (
        f"median : {median}\nmean : {mean}\nstd : {std}\n"
        f"coherence threshold : {threshold}\nmumber of coherent points : {v.size}\n"
    )


def estimate_azimuth_misreg(stack: Stack, p: Params) -> None:
    """ESD: azimuth misregistration (pixels) from the double-difference phase of coherent
    overlap pixels, phase / (2 pi x Doppler difference x line interval)."""
    overlap_dir = Path(p["overlap_dir"])
    files = sorted(overlap_dir.glob("IW[1-3]/overlap_*.int"))
    if not files:
        raise SimulatorStepError(
            f"no overlap interferograms in {overlap_dir}: run overlap_withDEM first"
        )
    threshold = p.get("coh_threshold", "0.85")
    phases = []
    for f in files:
        dd = np.asarray(read_isce_raster(f, 1), dtype=np.complex128)
        coh = np.asarray(read_isce_raster(_need(f.with_suffix(".cor"), "overlap_withDEM"), 1))
        phases.append(np.angle(dd[coh > float(threshold)]))
    scale = 2 * np.pi * OVERLAP_DOPPLER_DIFFERENCE_HZ * stack.spec.azimuth_time_interval_s
    atomic.write_text(
        Path(p["out_azimuth"]),
        _misreg_text(np.concatenate(phases) / scale, threshold),
        skip_unchanged=True,
    )


def _range_shift(a: Array, b: Array) -> float:
    """Range shift (pixels) of ``b`` against ``a``: amplitude cross-correlation peak with a
    parabolic sub-pixel fit."""
    amp_a = np.abs(a) - np.abs(a).mean()
    amp_b = np.abs(b) - np.abs(b).mean()
    spectrum = np.fft.fft(amp_a, axis=1) * np.conj(np.fft.fft(amp_b, axis=1))
    xcorr = np.fft.ifft(spectrum, axis=1).real.sum(axis=0)
    peak = int(np.argmax(xcorr))
    left, centre, right = xcorr[peak - 1], xcorr[peak], xcorr[(peak + 1) % xcorr.size]
    curvature = left - 2 * centre + right
    sub = 0.5 * (left - right) / curvature if curvature != 0 else 0.0
    lag = peak if peak <= xcorr.size // 2 else peak - xcorr.size
    return float(-(lag + sub))


def estimate_range_misreg(stack: Stack, p: Params) -> None:
    """Range misregistration (pixels) from the overlap bursts of the two dates."""
    ref, sec = Path(p["reference"]), Path(p["secondary"])
    for d in (ref, sec):
        if not any((d / "overlap").glob("IW[1-3]/burst_top_*.slc")):
            raise SimulatorStepError(
                f"no overlap bursts in {d}/overlap: run the overlap steps first"
            )
    shifts = [
        _range_shift(read_isce_raster(f, 1), read_isce_raster(sec / f.relative_to(ref), 1))
        for f in sorted((ref / "overlap").glob("IW[1-3]/burst_*_*.slc"))
    ]
    atomic.write_text(
        Path(p["out_range"]),
        _misreg_text(np.array(shifts), p.get("snr_threshold", "10")),
        skip_unchanged=True,
    )


_MERGED_KIND: dict[str, tuple[str, str, str | None, str | None]] = {
    # pattern prefix -> (scheme, family, image_type, description)
    "lat": ("BSQ", "image", None, None),
    "lon": ("BSQ", "image", None, None),
    "hgt": ("BSQ", "image", None, None),
    "los": ("BSQ", "image", None, None),
    "incLocal": ("BSQ", "image", None, None),
    "shadowMask": (
        "BIL",
        "image",
        None,
        "Radar shadow-layover mask. 1 - Radar Shadow. 2 - Radar Layover. 3 - Both.",
    ),
    "fine": ("BIP", "intimage", "cpx", None),
    "burst": ("BIP", "slcimage", "slc", None),
}


def merge_bursts(stack: Stack, p: Params) -> None:
    """Stitch burst files into ``merged/``; multilooked rasters get a virtual ``.full`` mosaic."""
    stack_dir = Path(p["stack"])
    if not any(stack_dir.glob("IW[1-3].xml")):
        raise SimulatorStepError(f"no IW*.xml in {stack_dir}: run extract_stack_valid_region first")
    swaths = _swaths(Path(p["inp_reference"]), "the step producing " + p["inp_reference"])
    dirname = Path(p["dirname"])
    pattern = p["name_pattern"]
    prefix = pattern.split("*")[0].rstrip("_")
    if prefix not in _MERGED_KIND:
        raise SimulatorStepError(f"name_pattern {pattern} is not supported by the simulator")
    tiles = []
    mosaic: Array | None = None
    info = None
    for s in swaths:
        files = sorted((dirname / f"IW{s}").glob(pattern))
        if len(files) != stack.spec.bursts_per_swath:
            raise SimulatorStepError(
                f"{dirname}/IW{s} holds {len(files)} files matching {pattern}, expected "
                f"{stack.spec.bursts_per_swath}: run the step producing them first"
            )
    for s, k, rows, cols in _tiles(stack, swaths):
        path = sorted((dirname / f"IW{s}").glob(pattern))[k - 1]
        _need(path, "the step producing " + str(dirname))
        info = read_isce_info(path)
        data = read_isce_raster(path)
        if mosaic is None:
            mosaic = np.zeros((info.bands, stack.spec.length, stack.spec.width), dtype=info.dtype)
        mosaic[:, rows, cols] = data
        tiles.append(Tile(Path(f"{path}.vrt"), info.width, info.length, cols.start, rows.start))
    assert mosaic is not None and info is not None
    scheme, family, image_type, desc = _MERGED_KIND[prefix]
    outfile = Path(p["outfile"])
    if _bool(p.get("multilook", "False")):
        # the virtual mosaic first: the multilooked raster, renamed into place last, marks done
        write_virtual_full(
            Path(f"{outfile}.full"),
            tiles,
            spec=stack.spec,
            dtype=info.dtype,
            bands=info.bands,
            scheme=info.scheme,
            image_type=image_type,
            family=family,
        )
        _write(outfile, mosaic, scheme, family=family, image_type=image_type, description=desc)
    else:
        _write(
            Path(f"{outfile}.full"),
            mosaic,
            scheme,
            family=family,
            image_type=image_type,
            description=desc,
        )
    print(f"mergeBursts: {pattern} of {dirname} -> {outfile}")


def filter_and_coherence(stack: Stack, p: Params) -> None:
    """Goldstein filtering; coherence |<s1 s2*>| / <|s1||s2|> in a 5 x 5 window."""
    ifg = read_isce_raster(_need(Path(p["input"]), "merge_burst_igram"), 1)
    amp1 = np.abs(read_isce_raster(_need(Path(p["slc1"]), "merge_reference_secondary_slc"), 1))
    amp2 = np.abs(read_isce_raster(_need(Path(p["slc2"]), "merge_reference_secondary_slc"), 1))
    if amp1.shape != ifg.shape or amp2.shape != ifg.shape:
        raise SimulatorStepError(
            f"{p['slc1']} / {p['slc2']} do not match {p['input']} in size: rerun the merge steps"
        )
    power = np.abs(_box(amp1 * amp2, 5))
    coh = np.divide(np.abs(_box(ifg, 5)), power, out=np.zeros(power.shape), where=power > 0)
    coh = np.clip(coh, 0.0, 1.0).astype(np.float32)
    _write(
        Path(p["complex_coh"]),
        np.stack([np.abs(ifg).astype(np.float32), coh]),
        "BIL",
        family="offsetimage",
        image_type="cor",
    )
    _write_int(Path(p["filt"]), goldstein(ifg, float(p.get("strength", "0.5"))))
    _write(Path(p["coh"]), coh, "BIP")
    print(f"FilterAndCoherence: {p['filt']}")


def unwrap(stack: Stack, p: Params) -> None:
    """Unwrap the filtered interferogram with snaphu (smooth costs, low coherence masked).

    snaphu's connected components go to ``.conncomp``. Components are unwrapped
    independently, so their relative 2 pi offsets are ambiguous: pairs picked by
    ``has_unwrapping_error`` get every component but the largest offset by 2 pi, the
    error MintPy's unwrapping-error correction has to find.
    """
    import snaphu

    ifg_path = Path(p["ifg"])
    ifg = np.asarray(read_isce_raster(_need(ifg_path, "filter_coherence"), 1), dtype=np.complex64)
    coh = np.asarray(read_isce_raster(_need(Path(p["coh"]), "filter_coherence"), 1))
    _swaths(Path(p["reference"]), "run_01 (unpack_topo_reference)")
    d1, d2 = stack.pair_of(ifg_path)
    if coh.shape != ifg.shape:  # ionosphere sub-band interferograms are coarser
        coh = coherence_estimate(ifg)
    coh = np.nan_to_num(np.clip(coh, 0.0, 1.0)).astype(np.float32)
    valid = np.abs(ifg) > 0
    mask = valid & (_box(coh, 3).real > UNWRAP_MASK_COHERENCE)
    looks = float(p.get("rlks", "1")) * float(p.get("alks", "1"))
    if mask.sum() < 2:
        unw, labels = np.zeros(ifg.shape, np.float32), np.zeros(ifg.shape, np.uint32)
    else:
        unw, labels = snaphu.unwrap(ifg, coh, nlooks=looks, cost="smooth", mask=mask)
    cycles = unwrapping_error_cycles(stack.spec, d1, d2)
    ids, sizes = np.unique(labels[labels > 0], return_counts=True)
    if cycles and ids.size > 1:
        smaller = np.isin(labels, ids[sizes != sizes.max()])
        unw = unw + np.where(smaller, 2 * np.pi * cycles, 0.0)
        print(f"unwrap: {d1}_{d2} components {ids.size}: smaller ones offset by {cycles} x 2 pi")
    unw = np.where(valid, unw, 0.0)
    out = Path(p["unw"])
    _write(
        out,
        np.stack([np.abs(ifg), unw]).astype(np.float32),
        "BIL",
        family="unwimage",
        image_type="unw",
    )
    _write(Path(f"{out}.conncomp"), labels.astype(np.uint8), "BIP")
    print(f"unwrap: {d1}_{d2} -> {out} ({ids.size} connected components)")


# ----------------------------------------------------------------------------- ionosphere


def _ion_shapes(stack: Stack, nrlks: int, nalks: int) -> tuple[int, int]:
    return (stack.spec.full_length // nalks, stack.spec.full_width // nrlks)


def subband(stack: Stack, p: Params) -> None:
    """Lower/upper range sub-band bursts of the reference (no ionosphere in the scene)."""
    ref = Path(p["directory"])
    swaths = _swaths(ref, "run_01 (unpack_topo_reference)")
    for s, k, _, _ in _tiles(stack, swaths):
        data = read_isce_raster(
            _need(ref / f"IW{s}" / f"burst_{k:02d}.slc", "unpack_topo_reference"), 1
        )
        for band in ("lower", "upper"):
            _write_slc(ref / f"IW{s}" / f"burst_{k:02d}_{band}.slc", data)


def subband_and_resamp(stack: Stack, p: Params) -> None:
    """Sub-band bursts of a secondary, resampled onto the reference grid."""
    sec = Path(p["secondary"])
    coreg = Path(p["coregdir"])
    swaths = _swaths(sec, "unpack_secondary_slc")
    _swaths(coreg, "fullBurst_resample")
    for s, k, _, _ in _tiles(stack, swaths):
        data = read_isce_raster(
            _need(sec / f"IW{s}" / f"burst_{k:02d}.slc", "unpack_secondary_slc"), 1
        )
        for band in ("lower", "upper"):
            _write_slc(coreg / f"IW{s}" / f"burst_{k:02d}_{band}.slc", data)


def merge_bursts_ion(stack: Stack, p: Params) -> None:
    """Merge sub-band burst interferograms and take the first-stage ionosphere looks."""
    dirname = Path(p["dirname"])
    swaths = _swaths(dirname, "generateIgram_ion")
    mosaic = _read_bursts(stack, dirname, swaths, "fine_%02d.int", "generateIgram_ion")[0]
    shape = _ion_shapes(stack, int(p["nrlks0"]), int(p["nalks0"]))
    _write_int(Path(p["outfile"]), resample_mean(mosaic, shape))


def coherence_ion(stack: Stack, p: Params) -> None:
    """Coherence between the lower and upper sub-band interferograms."""
    lower = read_isce_raster(_need(Path(p["lower"]), "mergeBurstsIon"), 1)
    upper = read_isce_raster(_need(Path(p["upper"]), "mergeBurstsIon"), 1)
    cross = _box(lower * np.conj(upper), 3)
    power = np.sqrt(np.abs(_box(np.abs(lower) ** 2, 3)) * np.abs(_box(np.abs(upper) ** 2, 3)))
    coh = np.divide(np.abs(cross), power, out=np.zeros(power.shape), where=power > 0)
    if "nrlks" in p:
        shape = (coh.shape[0] // int(p["nalks"]), coh.shape[1] // int(p["nrlks"]))
        coh = np.asarray(resample_mean(coh, shape)).real
    _write(Path(p["coherence"]), coh.astype(np.float32), "BIP")


def look_unw_ion(stack: Stack, p: Params) -> None:
    unw = read_isce_raster(_need(Path(p["unw"]), "unwrap_ion"))
    shape = (unw.shape[1] // int(p["nalks"]), unw.shape[2] // int(p["nrlks"]))
    looked = np.stack([np.asarray(resample_mean(b, shape)).real for b in unw]).astype(np.float32)
    _write(Path(p["output"]), looked, "BIL", family="unwimage", image_type="unw")


def filt_ion(stack: Stack, p: Params) -> None:
    ion = read_isce_raster(_need(Path(p["input"]), "computeIon"))
    _need(Path(p["coherence"]), "computeIon")
    smooth = np.stack([ion[0], _box(ion[1], 3).real]).astype(np.float32)
    _write(Path(p["output"]), smooth, "BIL")


FUNCTIONS: dict[str, Callable[[Stack, Params], None]] = {
    "Sentinel1_TOPS": sentinel1_tops,
    "topo": topo,
    "computeBaseline": compute_baseline,
    "geo2rdr": geo2rdr,
    "resamp_withCarrier": resamp_with_carrier,
    "generateIgram": generate_igram,
    "overlap_withDEM": overlap_with_dem,
    "estimateAzimuthMisreg": estimate_azimuth_misreg,
    "estimateRangeMisreg": estimate_range_misreg,
    "mergeBursts": merge_bursts,
    "FilterAndCoherence": filter_and_coherence,
    "unwrap": unwrap,
    "subband": subband,
    "subband_and_resamp": subband_and_resamp,
    "mergeBurstsIon": merge_bursts_ion,
    "coherenceIon": coherence_ion,
    "lookUnwIon": look_unw_ion,
    "filtIon": filt_ion,
}


# ----------------------------------------------------------------------------- scripts


def sentinel_wrapper(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="SentinelWrapper.py")
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("-s", "--start", type=int, default=0)
    parser.add_argument("-e", "--end", type=int, default=9999)
    args = parser.parse_args(list(argv))
    config = Path(args.config)
    stack = Stack.find(config)
    try:
        sections = read_isce_config(config)
    except (OSError, IsceConfigError) as exc:
        raise SimulatorStepError(f"cannot read config {config}: {exc}") from exc
    if not sections:
        raise SimulatorStepError(f"config {config} has no [Function-N] section")
    for index, section in enumerate(sections):
        if not args.start <= index <= args.end:
            continue
        fn = FUNCTIONS.get(section.name)
        if fn is None:
            raise SimulatorStepError(
                f"function {section.name} in {config} is not supported by the simulator"
            )
        print(f"Running: {section.name}")
        fn(stack, section.params)
    return 0


def subset_reference(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="subsetReference.py")
    parser.add_argument("-m", "--reference", required=True)
    parser.add_argument("-g", "--geom_reference", required=True)
    args = parser.parse_args(list(argv))
    ref, geom = Path(args.reference), Path(args.geom_reference)
    stack = Stack.find(ref)
    swaths = _swaths(ref, "run_01 (unpack_topo_reference)")
    mosaic = _read_bursts(stack, ref, swaths, "burst_%02d.slc", "unpack_topo_reference")
    _write_overlap_slcs(stack, mosaic, ref, swaths, stack.spec.reference)
    cols = swath_slices(stack.spec, swaths)
    for name in ("lat", "lon", "hgt"):
        layer = _read_bursts(stack, geom, swaths, f"{name}_%02d.rdr", "run_01 (topo)")
        for s in swaths:
            for k, rows in _overlap_names(stack):
                for side in ("top", "bot"):
                    out = geom / "overlap" / f"IW{s}" / f"{name}_{side}_{k:02d}_{k + 1:02d}.rdr"
                    _write(out, layer[0, rows, cols[s]], "BIP")
    print(f"subsetReference: overlaps of {swaths} in {ref}/overlap")
    return 0


def invert_misreg(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="invertMisreg.py")
    parser.add_argument("-i", "--input", required=True)
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args(list(argv))
    pairs_dir = Path(args.input)
    values: dict[tuple[str, str], float] = {}
    for f in sorted(pairs_dir.glob("*/*.txt")):
        m = _PAIR.match(f.parent.name)
        if not m:
            continue
        for line in f.read_text().splitlines():
            if line.lower().startswith("median"):
                values[(m.group(1), m.group(2))] = float(line.split(":")[1])
    if not values:
        raise SimulatorStepError(
            f"no pair misregistration files in {pairs_dir}: run pairs_misreg first"
        )
    dates = sorted({d for pair in values for d in pair})
    design = np.zeros((len(values), len(dates) - 1))
    obs = np.zeros(len(values))
    for row, ((a, b), v) in enumerate(sorted(values.items())):
        if dates.index(b) > 0:
            design[row, dates.index(b) - 1] = 1.0
        if dates.index(a) > 0:
            design[row, dates.index(a) - 1] = -1.0
        obs[row] = v
    solution = np.linalg.lstsq(design, obs, rcond=None)[0] if len(dates) > 1 else np.zeros(0)
    out = Path(args.output)
    for d, v in zip(dates, [0.0, *solution.tolist()], strict=True):
        atomic.write_text(out / f"{d}.txt", f"{v}\n", skip_unchanged=True)
    print(f"invertMisreg: {len(dates)} dates from {len(values)} pairs -> {out}")
    return 0


def extract_common_valid_region(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="extractCommonValidRegion.py")
    parser.add_argument("-m", "--reference", required=True)
    parser.add_argument("-s", "--secondary", required=True)
    args = parser.parse_args(list(argv))
    ref, coreg = Path(args.reference), Path(args.secondary)
    stack = Stack.find(ref)
    swaths = _swaths(ref, "run_01 (unpack_topo_reference)")
    dates = sorted(d for d in coreg.glob("[0-9]" * 8) if d.is_dir())
    if not dates:
        raise SimulatorStepError(
            f"no coregistered secondaries in {coreg}: run fullBurst_resample first"
        )
    for d in dates:
        for s in swaths:
            _need(d / f"IW{s}.xml", f"fullBurst_resample of {d.name}")
    out = stack.root / "stack"
    for s in swaths:
        atomic.write_text(out / f"IW{s}.xml", (ref / f"IW{s}.xml").read_text(), skip_unchanged=True)
    print(f"extractCommonValidRegion: {len(dates)} secondaries, swaths {swaths} -> {out}")
    return 0


def compute_ion(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="computeIon.py")
    for key in ("--lower", "--upper", "--coherence", "--ionosphere", "--coherence_output"):
        parser.add_argument(key, required=True)
    parser.add_argument("--masked_areas", type=int, nargs=4, action="append", default=None)
    args = parser.parse_args(list(argv))
    lower = read_isce_raster(_need(Path(args.lower), "look_ion"))
    upper = read_isce_raster(_need(Path(args.upper), "look_ion"))
    coh = read_isce_raster(_need(Path(args.coherence), "look_ion"), 1)
    ion = 0.5 * (lower[1] - upper[1])
    _write(Path(args.ionosphere), np.stack([coh, ion]).astype(np.float32), "BIL")
    _write(Path(args.coherence_output), coh.astype(np.float32), "BIP")
    return 0


def invert_ion(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="invertIon.py")
    parser.add_argument("--idir", required=True)
    parser.add_argument("--odir", required=True)
    for key in ("--nrlks1", "--nalks1", "--nrlks2", "--nalks2"):
        parser.add_argument(key, type=int, required=True)
    parser.add_argument("--merged_geom", required=True)
    parser.add_argument("--interp", action="store_true")
    parser.add_argument("--msk_overlap", action="store_true")
    args = parser.parse_args(list(argv))
    geom = read_isce_info(_need(Path(args.merged_geom), "merge_reference_secondary_slc"))
    pairs: dict[tuple[str, str], Array] = {}
    for f in sorted(Path(args.idir).glob("*/ion_cal/filt.ion")):
        m = _PAIR.match(f.parent.parent.name)
        if m:
            pairs[(m.group(1), m.group(2))] = read_isce_raster(f, 2)
    if not pairs:
        raise SimulatorStepError(f"no ion/*/ion_cal/filt.ion under {args.idir}: run filtIon first")
    dates = sorted({d for pair in pairs for d in pair})
    design = np.zeros((len(pairs), len(dates) - 1))
    obs = np.stack([np.asarray(v, dtype=np.float64).ravel() for v in pairs.values()])
    for row, (a, b) in enumerate(pairs):
        if dates.index(b) > 0:
            design[row, dates.index(b) - 1] = 1.0
        if dates.index(a) > 0:
            design[row, dates.index(a) - 1] = -1.0
    solution = np.linalg.lstsq(design, obs, rcond=None)[0]
    shape = next(iter(pairs.values())).shape
    series = [np.zeros(shape), *[row.reshape(shape) for row in solution]]
    for d, ion in zip(dates, series, strict=True):
        full = resample_nearest(ion, (geom.length, geom.width)).astype(np.float32)
        _write(Path(args.odir) / f"{d}.ion", full, "BIP")
    return 0


def stack_sentinel(argv: Sequence[str]) -> int:
    return stack_sentinel_main(argv)


SCRIPT_MAIN: dict[str, Callable[[Sequence[str]], int]] = {
    "stackSentinel.py": stack_sentinel,
    "SentinelWrapper.py": sentinel_wrapper,
    "subsetReference.py": subset_reference,
    "invertMisreg.py": invert_misreg,
    "extractCommonValidRegion.py": extract_common_valid_region,
    "computeIon.py": compute_ion,
    "invertIon.py": invert_ion,
}
SCRIPTS = tuple(SCRIPT_MAIN)


def run_script(name: str, argv: Sequence[str]) -> int:
    """Entry point of the shims: run script ``name``; errors -> message on stderr, status 1."""
    try:
        return SCRIPT_MAIN[name](argv)
    except (SimulatorStepError, FileNotFoundError, ValueError) as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        return 1


def install_simulator_bin(dest: Path) -> Path:
    """Write the executable stand-ins into ``dest`` (prepend it to PATH); returns ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in SCRIPTS:
        text = (
            f"#!{sys.executable}\n"
            f'"""insarflow simulator stand-in for ISCE2\'s {name}."""\n'
            "import sys\n\n"
            "from insarflow.simulator.steps import run_script\n\n"
            f"sys.exit(run_script({name!r}, sys.argv[1:]))\n"
        )
        path = dest / name
        atomic.write_text(path, text, skip_unchanged=True)
        path.chmod(0o755)
    return dest
