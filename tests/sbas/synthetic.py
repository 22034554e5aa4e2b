"""A small synthetic ISCE2 topsStack output for the MintPy stage's tests.

Written with the real file formats: ``reference/IW1.xml`` is the real ISCE2 XML from
the fixtures (image paths pointed at the new stack), geometry and interferograms are
raw rasters with ISCE2 sidecars in the layouts a real topsStack run writes (see
``fixtures/isce2_products``), baselines are topsStack's text files. The phase holds a
known linear LOS velocity, a random constant per interferogram (the unwrapper's
arbitrary reference) and small white noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt

from insarflow.tasks.isce_io import write_isce_raster

FIXTURE_STACK_ROOT = "/data/stack"
WAVELENGTH = 0.05546576  # reference/IW1.xml radarwavelength


@dataclass(frozen=True)
class SyntheticStack:
    stack_dir: Path
    dates: tuple[str, ...]
    pairs: tuple[str, ...]
    velocity: npt.NDArray[np.float64]  # m/yr, MintPy's sign: positive towards the satellite
    reference_yx: tuple[int, int]
    bperp: dict[str, float]
    looks: tuple[int, int]  # (azimuth, range)

    @property
    def shape(self) -> tuple[int, int]:
        return self.velocity.shape


def _years(d0: str, d1: str) -> float:
    a = date(int(d0[:4]), int(d0[4:6]), int(d0[6:]))
    b = date(int(d1[:4]), int(d1[4:6]), int(d1[6:]))
    return (b - a).days / 365.25


def make_topsstack(
    root: Path,
    fixtures_dir: Path,
    *,
    n_dates: int = 6,
    connections: int = 3,
    length: int = 40,
    width: int = 60,
    noise_rad: float = 0.02,
    seed: int = 1,
) -> SyntheticStack:
    """Write a topsStack work dir under ``root/stack`` and return its ground truth."""
    rng = np.random.default_rng(seed)
    stack = root / "stack"
    looks = (3, 9)

    # reference/IW1.xml: the real ISCE2 XML (acquired 2021-04-01), paths adapted.
    xml = (fixtures_dir / "isce2_products" / "reference" / "IW1.xml").read_text(encoding="utf-8")
    (stack / "reference").mkdir(parents=True)
    (stack / "reference" / "IW1.xml").write_text(
        xml.replace(FIXTURE_STACK_ROOT, str(stack)), encoding="utf-8"
    )

    start = date(2021, 4, 1)
    dates = tuple((start + timedelta(days=12 * i)).strftime("%Y%m%d") for i in range(n_dates))
    pairs = tuple(
        f"{dates[i]}_{dates[j]}"
        for i in range(n_dates)
        for j in range(i + 1, min(i + connections, n_dates - 1) + 1)
    )

    # Geometry: a descending pass (heading ~ -167 deg), range increasing westwards.
    yy, xx = np.mgrid[0:length, 0:width].astype(np.float64)
    hgt = 150.0 + 120.0 * np.exp(-((yy - 10) ** 2 + (xx - 15) ** 2) / 200.0)
    lat = 57.60 - 0.00038 * yy - 0.00008 * xx
    lon = 14.90 - 0.00069 * xx + 0.00009 * yy
    inc = (30.5 + 5.0 * xx / width).astype(np.float32)
    az = np.full((length, width), -103.0, dtype=np.float32)
    geom = stack / "merged" / "geom_reference"
    write_isce_raster(geom / "hgt.rdr", hgt, scheme="BSQ", image_type="dem")
    write_isce_raster(geom / "lat.rdr", lat, scheme="BSQ")
    write_isce_raster(geom / "lon.rdr", lon, scheme="BSQ")
    write_isce_raster(geom / "los.rdr", np.stack([inc, az]), scheme="BSQ")
    write_isce_raster(geom / "shadowMask.rdr", np.zeros((length, width), np.uint8), scheme="BIL")
    write_isce_raster(geom / "incLocal.rdr", np.stack([inc, np.zeros_like(inc)]), scheme="BSQ")
    # Full-resolution versions: MintPy derives ALOOKS/RLOOKS from their size.
    for name, data, scheme in (
        ("hgt.rdr.full", hgt, "BIP"),
        ("lat.rdr.full", lat, "BIP"),
        ("lon.rdr.full", lon, "BIP"),
        ("los.rdr.full", np.stack([inc, az]), "BIL"),
        ("shadowMask.rdr.full", np.zeros((length, width), np.uint8), "BIL"),
    ):
        full = np.repeat(np.repeat(data, looks[0], axis=-2), looks[1], axis=-1)
        write_isce_raster(geom / name, full, scheme=scheme)  # type: ignore[arg-type]

    # Baselines relative to the first date, as topsStack's average_baseline writes them.
    bperp = {dates[0]: 0.0}
    for d in dates[1:]:
        bperp[d] = float(np.round(rng.uniform(-80, 80), 3))
        bdir = stack / "baselines" / f"{dates[0]}_{d}"
        bdir.mkdir(parents=True)
        (bdir / f"{dates[0]}_{d}.txt").write_text(
            f"swath: IW1\nBperp (average): {bperp[d]}\nBpar (average): {bperp[d] / 3:.3f}\n",
            encoding="utf-8",
        )

    # Velocity: a subsidence bowl of -25 mm/yr and a gentle uplift ramp to the east.
    velocity = -0.025 * np.exp(-((yy - 22) ** 2 + (xx - 38) ** 2) / (2 * 7.0**2))
    velocity += 0.004 * np.clip(xx - 45, 0, None) / width
    reference_yx = (4, 4)
    velocity -= velocity[reference_yx]
    to_phase = -4.0 * math.pi / WAVELENGTH
    for pair in pairs:
        d0, d1 = pair.split("_")
        phase = to_phase * velocity * _years(d0, d1)
        phase += rng.uniform(-10, 10) + rng.normal(0.0, noise_rad, phase.shape)
        amplitude = 1.0 + 0.1 * rng.random(phase.shape)
        ifg = stack / "merged" / "interferograms" / pair
        write_isce_raster(
            ifg / "filt_fine.unw",
            np.stack([amplitude, phase]).astype(np.float32),
            scheme="BIL",
            image_type="unw",
        )
        cor = np.clip(0.92 + rng.normal(0, 0.02, phase.shape), 0, 1).astype(np.float32)
        write_isce_raster(ifg / "filt_fine.cor", cor, scheme="BIP", image_type="cor")
        write_isce_raster(
            ifg / "filt_fine.unw.conncomp",
            np.ones(phase.shape, np.uint8),
            scheme="BIP",
        )
    return SyntheticStack(
        stack_dir=stack,
        dates=dates,
        pairs=pairs,
        velocity=velocity,
        reference_yx=reference_yx,
        bperp=bperp,
        looks=looks,
    )
