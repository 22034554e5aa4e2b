"""A known LOS velocity field planted in real-format Sentinel-1 measurement tiffs.

The real SAFE's measurement tiffs carry a constant pixel value. For the dates that
:mod:`tests.isce2.safe_stack` makes from it, :func:`measurement_tiff` writes the swath's tiff
again with coherent speckle (the same complex Gaussian speckle on every date, so coherence
is ~1) around the deformation, each pixel turned by the phase of that date's displacement:

    SLC_k = speckle * exp(+j 4 pi d_k / lambda),   d_k = v(lat, lon) * (t_k - t_0)

with ``d`` the displacement towards the satellite (MintPy's sign: positive is uplift/towards
the satellite), so the interferogram ``ref * conj(sec)`` of ISCE2 carries
``4 pi (d_ref - d_sec) / lambda`` and MintPy's time series recovers ``d``.

Where a pixel lies on the ground comes from the annotation's geolocation grid (interpolated
in azimuth time and range pixel). That grid was computed on the annotation's heights, so
the test's DEM is written from the same heights (``safe_stack.annotation_dem``): ISCE2 then
geolocates each pixel where the grid says it is, and the field is known on the product's
lat/lon grid.
"""

from __future__ import annotations

import re
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

SPEED_OF_LIGHT = 299_792_458.0
SPECKLE_STD = 300.0  # per component, in the tiff's int16 counts: rounding is 0.1 % of it
SEED = 20210401
# Beyond this many sigmas from the centre the field is below 1e-7 of its peak: the speckle
# (and the field) need not reach further.
REACH_SIGMAS = 5.5
KM_PER_DEG_LAT = 111.2


@dataclass(frozen=True)
class GaussianBowl:
    """LOS velocity ``peak * exp(-r^2 / 2 sigma^2)`` (m/yr, towards the satellite)."""

    lat: float
    lon: float
    sigma_km: float
    peak_m_per_year: float

    def velocity(self, lat: FloatArray, lon: FloatArray) -> FloatArray:
        dy = (np.asarray(lat) - self.lat) * KM_PER_DEG_LAT
        dx = (np.asarray(lon) - self.lon) * KM_PER_DEG_LAT * np.cos(np.radians(self.lat))
        return self.peak_m_per_year * np.exp(-(dx**2 + dy**2) / (2 * self.sigma_km**2))

    def reach_deg(self) -> tuple[float, float]:
        """(lat, lon) half-extent in degrees outside which the field is negligible."""
        km = REACH_SIGMAS * self.sigma_km
        return km / KM_PER_DEG_LAT, km / (KM_PER_DEG_LAT * np.cos(np.radians(self.lat)))


def _time(text: str) -> float:
    """Seconds since midnight of an annotation timestamp (dates of one scene share the day)."""
    stamp = datetime.strptime(text[:26], "%Y-%m-%dT%H:%M:%S.%f")
    return stamp.hour * 3600 + stamp.minute * 60 + stamp.second + stamp.microsecond * 1e-6


@dataclass(frozen=True)
class Geolocation:
    """The annotation's geolocation grid and burst timing of one swath tiff."""

    row_times: FloatArray  # azimuth time of each grid row (s of day)
    pixels: FloatArray  # range pixel of each grid column
    lat: FloatArray  # (rows, columns)
    lon: FloatArray
    height: FloatArray
    burst_times: FloatArray  # azimuth time of each burst's first line
    lines_per_burst: int
    samples: int
    line_interval: float
    wavelength: float

    @classmethod
    def from_annotation(cls, annotation: str) -> Geolocation:
        root = ET.fromstring(annotation)
        points = root.findall("geolocationGrid/geolocationGridPointList/geolocationGridPoint")
        lines = sorted({int(p.findtext("line") or 0) for p in points})
        pixels = sorted({int(p.findtext("pixel") or 0) for p in points})
        shape = (len(lines), len(pixels))
        lat, lon, height, times = (np.zeros(shape) for _ in range(4))
        for p in points:
            i = lines.index(int(p.findtext("line") or 0))
            j = pixels.index(int(p.findtext("pixel") or 0))
            lat[i, j] = float(p.findtext("latitude") or "nan")
            lon[i, j] = float(p.findtext("longitude") or "nan")
            height[i, j] = float(p.findtext("height") or "nan")
            times[i, j] = _time(p.findtext("azimuthTime") or "")
        image = "imageAnnotation/imageInformation/"
        return cls(
            row_times=times.mean(axis=1),
            pixels=np.asarray(pixels, dtype=float),
            lat=lat,
            lon=lon,
            height=height,
            burst_times=np.array(
                [_time(b.findtext("azimuthTime") or "") for b in root.iter("burst")]
            ),
            lines_per_burst=int(root.findtext("swathTiming/linesPerBurst") or 0),
            samples=int(root.findtext(image + "numberOfSamples") or 0),
            line_interval=float(root.findtext(image + "azimuthTimeInterval") or "nan"),
            wavelength=SPEED_OF_LIGHT
            / float(root.findtext("generalAnnotation/productInformation/radarFrequency") or 0),
        )

    def latlon(self, burst: int, samples: slice) -> tuple[FloatArray, FloatArray]:
        """Latitude and longitude of every line of ``burst`` over ``samples``."""
        times = self.burst_times[burst] + np.arange(self.lines_per_burst) * self.line_interval
        cols = np.arange(samples.start, samples.stop, dtype=float)
        # Linear in azimuth time between grid rows (extrapolated past the last one).
        row = np.clip(np.searchsorted(self.row_times, times) - 1, 0, len(self.row_times) - 2)
        w = (times - self.row_times[row]) / (self.row_times[row + 1] - self.row_times[row])
        out = []
        for grid in (self.lat, self.lon):
            along = np.array([np.interp(cols, self.pixels, r) for r in grid])  # (rows, cols)
            out.append((1 - w)[:, None] * along[row] + w[:, None] * along[row + 1])
        return out[0], out[1]


@dataclass
class PlantedSwath:
    """One swath's speckle and velocity field, computed once for all dates.

    Every burst within the field's reach gets speckle over its whole width (ISCE2 processes
    whole bursts: a constant part beside the speckle would unwrap differently); the other
    bursts keep the source's pixels.
    """

    geo: Geolocation
    speckle: dict[int, npt.NDArray[np.complex64]]  # burst -> (lines, samples)
    phase_per_year: dict[int, npt.NDArray[np.float32]]  # burst -> radians per year

    @classmethod
    def build(cls, annotation: str, bowl: GaussianBowl, seed: int = SEED) -> PlantedSwath:
        geo = Geolocation.from_annotation(annotation)
        dlat, dlon = bowl.reach_deg()
        speckle, phase = {}, {}
        for burst in range(len(geo.burst_times)):
            lat, lon = geo.latlon(burst, slice(0, geo.samples))
            if not ((np.abs(lat - bowl.lat) <= dlat) & (np.abs(lon - bowl.lon) <= dlon)).any():
                continue
            rng = np.random.default_rng(seed + burst)
            shape = lat.shape
            speckle[burst] = (
                rng.standard_normal(shape, dtype=np.float32)
                + 1j * rng.standard_normal(shape, dtype=np.float32)
            ).astype(np.complex64) * np.float32(SPECKLE_STD)
            phase[burst] = (4 * np.pi / geo.wavelength * bowl.velocity(lat, lon)).astype(np.float32)
        return cls(geo, speckle, phase)

    def tiff(self, source: bytes, years: float) -> bytes:
        """The swath tiff ``source`` rewritten with ``years`` of displacement on the speckle.

        The format (size, complex int16, compression, strips) is the source's.
        """
        from rasterio.errors import NotGeoreferencedWarning
        from rasterio.io import MemoryFile

        geo = self.geo
        with MemoryFile(source) as mem, mem.open() as src:
            profile = src.profile
            background = src.read(1, window=((0, 1), (0, src.width)))[0]
            if src.height != geo.lines_per_burst * len(geo.burst_times) or src.width != geo.samples:
                raise ValueError(f"tiff {src.width} x {src.height} does not match its annotation")
        with MemoryFile() as mem, warnings.catch_warnings():
            # Like the source, the tiff has no geotransform: ISCE2 reads the annotation.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with mem.open(**profile) as dst:
                for burst in range(len(geo.burst_times)):
                    if burst in self.speckle:
                        turn = np.exp(1j * self.phase_per_year[burst] * np.float32(years))
                        data = np.round(self.speckle[burst] * turn).astype(np.complex64)
                    else:
                        data = np.tile(background, (geo.lines_per_burst, 1))
                    first = burst * geo.lines_per_burst
                    window = ((first, first + geo.lines_per_burst), (0, geo.samples))
                    dst.write(data, 1, window=window)
            return bytes(mem.read())


def swath_annotation(members: dict[str, bytes], swath: int, polarization: str) -> str:
    """The annotation XML text of one swath and polarization among a SAFE zip's members."""
    pattern = re.compile(rf"/annotation/s1[ab]-iw{swath}-slc-{polarization}-[^/]+\.xml$")
    for name, data in members.items():
        if pattern.search(name):
            return data.decode("utf-8")
    raise KeyError(f"no IW{swath} {polarization} annotation among the SAFE's files")
