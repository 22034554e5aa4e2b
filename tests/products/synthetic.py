"""A small synthetic MintPy work directory, written with MintPy's own writer.

It has the layout ``smallbaselineApp.py`` leaves after the geocode step: radar
``timeseries.h5`` and ``inputs/ifgramStack.h5``, ``smallbaselineApp.cfg`` (MintPy's
default template with tropospheric correction off, so the final time series is
``timeseries_demErr.h5``) and ``geo/geo_*.h5`` with MintPy's attributes (Y_FIRST/X_FIRST
outer corner of the first pixel, degrees, no EPSG attribute, as geocode.py writes them).
A decoy ``geo/geo_timeseries_ramp.h5`` sorts after the real one, so picking by name
alone would choose the wrong file.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Y_FIRST = 34.6
X_FIRST = 116.5
Y_STEP = -0.0008
X_STEP = 0.0008


@dataclass(frozen=True)
class SyntheticMintpy:
    """Paths and the exact arrays written into the synthetic work directory."""

    mintpy_dir: Path
    dates: list[str]
    ref_yx: tuple[int, int]
    geo_meta: dict[str, str]
    velocity: npt.NDArray[np.float32]
    velocity_std: npt.NDArray[np.float32]
    timeseries: npt.NDArray[np.float32]
    temporal_coherence: npt.NDArray[np.float32]
    avg_spatial_coherence: npt.NDArray[np.float32]
    mask: npt.NDArray[np.bool_]
    height: npt.NDArray[np.float32]
    bperp: npt.NDArray[np.float32]
    pairs: list[tuple[str, str]]

    @property
    def geo_dir(self) -> Path:
        return self.mintpy_dir / "geo"


def _write(
    data: dict[str, Any] | npt.NDArray[Any], path: Path, meta: dict[str, str], **kwargs: Any
) -> None:
    from mintpy.utils import writefile

    with contextlib.redirect_stdout(io.StringIO()):
        writefile.write(data, str(path), metadata=meta, **kwargs)


def build_mintpy_dir(
    root: Path, *, n_dates: int = 8, length: int = 40, width: int = 50, seed: int = 0
) -> SyntheticMintpy:
    """Write a geocoded MintPy work directory under ``root/mintpy``."""
    import mintpy

    rng = np.random.default_rng(seed)
    mintpy_dir = root / "mintpy"
    (mintpy_dir / "geo").mkdir(parents=True)
    (mintpy_dir / "inputs").mkdir()

    first = date(2024, 12, 1)
    days = [first + timedelta(days=12 * i) for i in range(n_dates)]
    dates = [d.strftime("%Y%m%d") for d in days]
    years = np.array([(d - first).days / 365.25 for d in days], dtype=np.float64)

    yy, xx = np.mgrid[0:length, 0:width].astype(np.float64)
    ref_yx = (length - 5, width - 5)
    bowl = -0.03 * np.exp(-((yy - length / 2) ** 2 + (xx - 0.6 * width) ** 2) / (2 * 6.0**2))
    velocity = bowl + 0.002 * xx / width
    velocity -= velocity[ref_yx]
    noise = rng.normal(0.0, 0.002, (n_dates, length, width))
    timeseries = velocity[None] * years[:, None, None] + noise
    timeseries -= timeseries[0:1]
    timeseries -= timeseries[:, ref_yx[0] : ref_yx[0] + 1, ref_yx[1] : ref_yx[1] + 1]
    velocity_std = 0.001 + 0.0005 * rng.random((length, width))

    tcoh = np.clip(0.92 - 0.5 * (xx < width / 5) + rng.normal(0, 0.05, (length, width)), 0, 1)
    avg_coh = np.clip(0.6 + rng.normal(0, 0.1, (length, width)), 0, 1)
    height = 120.0 + 3.0 * yy + 0.5 * xx
    # geocode.py fills pixels outside the radar footprint with NaN
    velocity[0, :] = np.nan
    velocity_std[0, :] = np.nan
    timeseries[:, 0, :] = np.nan
    tcoh[0, :] = np.nan
    avg_coh[0, :] = np.nan
    height[0, :] = np.nan
    mask = np.nan_to_num(tcoh, nan=0.0) >= 0.7

    f32 = np.float32
    vel32, std32, ts32 = velocity.astype(f32), velocity_std.astype(f32), timeseries.astype(f32)
    tcoh32, coh32, hgt32 = tcoh.astype(f32), avg_coh.astype(f32), height.astype(f32)
    bperp = rng.uniform(-120, 120, n_dates).astype(f32)
    bperp[0] = 0.0

    common = {
        "LENGTH": str(length),
        "WIDTH": str(width),
        "PLATFORM": "Sen",
        "PROCESSOR": "isce",
        "ORBIT_DIRECTION": "ASCENDING",
        "WAVELENGTH": "0.05546576",
        "HEADING": "-12.5",
        "CENTER_LINE_UTC": "36000.0",
        "REF_DATE": dates[0],
        "REF_Y": str(ref_yx[0]),
        "REF_X": str(ref_yx[1]),
        "START_DATE": dates[0],
        "END_DATE": dates[-1],
        "mintpy_version": mintpy.__version__,
    }
    geo = {
        **common,
        "Y_FIRST": str(Y_FIRST),
        "X_FIRST": str(X_FIRST),
        "Y_STEP": str(Y_STEP),
        "X_STEP": str(X_STEP),
        "Y_UNIT": "degrees",
        "X_UNIT": "degrees",
        "REF_LAT": str(Y_FIRST + (ref_yx[0] + 0.5) * Y_STEP),
        "REF_LON": str(X_FIRST + (ref_yx[1] + 0.5) * X_STEP),
    }
    date_ds = np.array(dates, dtype=np.bytes_)
    geo_dir = mintpy_dir / "geo"

    # radar-coordinate files the geocode step and the network figure start from
    _write(
        {"timeseries": ts32, "date": date_ds, "bperp": bperp},
        mintpy_dir / "timeseries.h5",
        {**common, "FILE_TYPE": "timeseries", "UNIT": "m"},
    )
    pairs = [(dates[i], dates[j]) for i in range(n_dates) for j in (i + 1, i + 2) if j < n_dates]
    index = {d: i for i, d in enumerate(dates)}
    n_pairs = len(pairs)
    coherence = np.empty((n_pairs, length, width), dtype=f32)
    for k, (d1, d2) in enumerate(pairs):
        gap = index[d2] - index[d1]
        coherence[k] = np.clip(0.85 - 0.2 * gap + rng.normal(0, 0.05, (length, width)), 0, 1)
    drop = np.ones(n_pairs, dtype=bool)
    drop[-1] = False
    _write(
        {
            "date": np.array(pairs, dtype=np.bytes_),
            "bperp": np.array([bperp[index[b]] - bperp[index[a]] for a, b in pairs], f32),
            "dropIfgram": drop,
            "unwrapPhase": np.zeros((n_pairs, length, width), f32),
            "coherence": coherence,
            "connectComponent": np.ones((n_pairs, length, width), np.int16),
        },
        mintpy_dir / "inputs" / "ifgramStack.h5",
        {k: v for k, v in common.items() if k not in {"REF_DATE"}} | {"FILE_TYPE": "ifgramStack"},
    )
    template = Path(mintpy.__file__).parent / "defaults" / "smallbaselineApp.cfg"
    text = template.read_text().replace(
        "mintpy.troposphericDelay.method = auto", "mintpy.troposphericDelay.method = no"
    )
    assert "mintpy.troposphericDelay.method = no" in text
    (mintpy_dir / "smallbaselineApp.cfg").write_text(text)

    # geocoded outputs, as geocode.py and generate_mask.py name them
    _write(
        {"velocity": vel32, "velocityStd": std32},
        geo_dir / "geo_velocity.h5",
        {**geo, "FILE_TYPE": "velocity", "UNIT": "m/year", "DATE12": f"{dates[0]}_{dates[-1]}"},
        ds_unit_dict={"velocity": "m/year", "velocityStd": "m/year"},
    )
    ts_meta = {**geo, "FILE_TYPE": "timeseries", "UNIT": "m"}
    _write(
        {"timeseries": ts32, "date": date_ds, "bperp": bperp},
        geo_dir / "geo_timeseries_demErr.h5",
        ts_meta,
    )
    _write(
        {"timeseries": np.zeros_like(ts32), "date": date_ds, "bperp": bperp},
        geo_dir / "geo_timeseries_ramp.h5",
        ts_meta,
    )
    _write(
        {"temporalCoherence": tcoh32},
        geo_dir / "geo_temporalCoherence.h5",
        {**geo, "FILE_TYPE": "temporalCoherence", "UNIT": "1"},
    )
    _write(coh32, geo_dir / "geo_avgSpatialCoh.h5", {**geo, "FILE_TYPE": "coherence"})
    _write({"mask": mask}, geo_dir / "geo_maskTempCoh.h5", {**geo, "FILE_TYPE": "mask"})
    _write(
        {
            "height": hgt32,
            "incidenceAngle": np.full((length, width), 38.0, f32),
            "shadowMask": np.zeros((length, width), bool),
        },
        geo_dir / "geo_geometryRadar.h5",
        {**geo, "FILE_TYPE": "geometry"},
    )
    return SyntheticMintpy(
        mintpy_dir=mintpy_dir,
        dates=dates,
        ref_yx=ref_yx,
        geo_meta=geo,
        velocity=vel32,
        velocity_std=std32,
        timeseries=ts32,
        temporal_coherence=tcoh32,
        avg_spatial_coherence=coh32,
        mask=mask,
        height=hgt32,
        bperp=bperp,
        pairs=pairs,
    )
