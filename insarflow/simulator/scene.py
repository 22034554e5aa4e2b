"""The synthetic scene: a specification (JSON round-trip) and its known truth.

Everything is defined on the multilooked radar grid (``length`` x ``width``): rows run
along the flight direction (azimuth time), columns away from the track (slant range).
Per-date quantities (atmosphere, perpendicular baseline) are seeded by ``(seed, date)`` and
per-pair ones (decorrelation noise, which pairs get an unwrapping error) by
``(seed, date1, date2)``, so adding dates to a scene never changes what existing dates
and pairs look like (the stack update mode relies on this).

Sign conventions follow ISCE2 and MintPy: an interferogram is ``reference * conj(secondary)``
and its unwrapped phase is ``-4 pi / wavelength * (X(date2) - X(date1))`` where ``X`` is the
line-of-sight displacement (positive towards the satellite: a secular velocity plus an
annual term) plus the atmospheric delay (turbulent and height-correlated) and the DEM-error
term ``bperp * dz / (R sin(inc))``, all in metres.

The truth stays out of the products' processing: steps unwrap with snaphu and estimate
misregistration from the simulated data, as ISCE2 would.
"""

from __future__ import annotations

import json
import operator
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from insarflow import atomic

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
ComplexArray = npt.NDArray[np.complex64]

SPEED_OF_LIGHT = 299792458.0
EARTH_RADIUS_M = 6371000.0
EARTH_GM = 3.986004418e14
WGS84_A = 6378137.0
WGS84_E2 = 6.69437999014e-3
DATE_FORMAT = "%Y%m%d"
DAYS_PER_YEAR = 365.25

# The reference study of REFERENCE_WORKFLOW.md: S1 track 142, eastern China.
STUDY_BBOX_SNWE = (34.0, 34.6, 116.5, 117.95)


_LIMITS: dict[str, tuple[Callable[[Any, Any], bool], str]] = {
    "ge": (operator.ge, ">="),
    "gt": (operator.gt, ">"),
    "le": (operator.le, "<="),
    "lt": (operator.lt, "<"),
}


def _f(default: object, description: str, kind: type, **limits: float) -> Any:
    """A spec field: default, description (JSON schema-like docs) and numeric limits."""
    return field(default=default, metadata={"description": description, "kind": kind, **limits})


@dataclass(frozen=True)
class SceneSpec:
    """Everything that defines a synthetic Sentinel-1 stack; the same spec gives the same bytes.

    A frozen dataclass rather than a pydantic model: every simulator step process loads it,
    and plain dataclasses import several times faster.
    """

    dates: tuple[str, ...] = _f(
        (), "Acquisition dates YYYYMMDD (sorted, unique, at least two).", tuple
    )
    seed: int = _f(42, "Random seed of every synthetic field.", int, ge=0)
    reference_date: str | None = _f(None, "Reference date YYYYMMDD; default: the first date.", str)
    length: int = _f(150, "Multilooked raster length (azimuth lines).", int, ge=8)
    width: int = _f(200, "Multilooked raster width (range samples).", int, ge=8)
    range_looks: int = _f(9, "Range looks of the multilooked grid.", int, ge=1)
    azimuth_looks: int = _f(3, "Azimuth looks of the multilooked grid.", int, ge=1)
    swaths: tuple[int, ...] = _f((1, 2, 3), "IW swaths in the synthetic SAFE files.", tuple)
    bursts_per_swath: int = _f(3, "Bursts per swath.", int, ge=1, le=12)
    platform: str = _f("S1A", "Spacecraft: S1A, S1B or S1C.", str)
    relative_orbit: int = _f(142, "Track (relative orbit) number.", int, ge=1, le=175)
    flight_direction: str = _f("DESCENDING", "Pass direction: ASCENDING or DESCENDING.", str)
    heading_deg: float = _f(
        -167.8,
        "Flight heading, degrees clockwise from north (~-168 descending, ~-12 ascending).",
        float,
        ge=-180,
        le=180,
    )
    sensing_time: str = _f("22:17:46.500000", "UTC time of day of the first line.", str)
    wavelength_m: float = _f(0.05546576, "Radar wavelength (m).", float, gt=0)
    center_lat: float = _f(34.3, "Scene centre latitude (deg).", float, ge=-80, le=80)
    center_lon: float = _f(117.225, "Scene centre longitude (deg).", float, ge=-180, le=180)
    dem_bbox: tuple[float, ...] = _f(
        STUDY_BBOX_SNWE, "Area (S N W E) the synthetic DEM covers besides the scene.", tuple
    )
    dem_spacing_arcsec: float = _f(3.0, "Posting of the synthetic DEM (arc seconds).", float, gt=0)
    range_pixel_size_m: float = _f(
        2.329562114715323, "Full-resolution slant-range pixel (m).", float, gt=0
    )
    azimuth_time_interval_s: float = _f(
        0.002055556299999998, "Full-resolution line interval (s).", float, gt=0
    )
    prf_hz: float = _f(1717.128973878037, "Pulse repetition frequency (Hz).", float, gt=0)
    starting_range_m: float = _f(
        800900.919998656, "Slant range of the first column (m).", float, gt=0
    )
    satellite_height_m: float = _f(693000.0, "Orbit altitude (m).", float, gt=0)
    incidence_near_deg: float = _f(30.0, "Incidence angle at near range (deg).", float, gt=0, lt=90)
    incidence_far_deg: float = _f(46.0, "Incidence angle at far range (deg).", float, gt=0, lt=90)
    base_height_m: float = _f(40.0, "Height of the plain (m).", float)
    hill_count: int = _f(4, "Gaussian hills of the topography.", int, ge=0)
    hill_height_m: float = _f(250.0, "Tallest hill (m).", float, ge=0)
    subsidence_rate_m_per_yr: float = _f(
        -0.20, "LOS velocity at the bowl centre (m/yr; coal-mining subsidence reaches this).", float
    )
    subsidence_sigma_fraction: float = _f(
        0.12, "Bowl width (Gaussian sigma) / scene size.", float, gt=0
    )
    ramp_m_per_yr: float = _f(
        0.004, "LOS velocity difference across the scene in range (m/yr).", float
    )
    seasonal_amplitude_m: float = _f(
        0.004, "Amplitude of the annual LOS displacement at the bowl centre (m).", float, ge=0
    )
    atmosphere_std_m: float = _f(
        0.005, "Std of the per-date turbulent atmospheric delay (m).", float, ge=0
    )
    atmosphere_scale_px: float = _f(
        25.0, "Correlation length of the turbulent atmosphere (pixels).", float, gt=0
    )
    stratified_std_m_per_km: float = _f(
        0.02,
        "Std over dates of the height-correlated (stratified) delay, m per km of height.",
        float,
        ge=0,
    )
    dem_error_max_m: float = _f(6.0, "Largest DEM error (m).", float, ge=0)
    bperp_max_m: float = _f(
        100.0, "Perpendicular baselines are uniform in +-this (m).", float, ge=0
    )
    coherence_initial: float = _f(0.9, "Short-term coherence.", float, gt=0, le=1)
    coherence_floor: float = _f(0.35, "Long-term coherence.", float, ge=0, le=1)
    coherence_decay_days: float = _f(60.0, "Temporal decorrelation time (days).", float, gt=0)
    water_coherence: float = _f(0.05, "Coherence of the water patch.", float, ge=0, le=1)
    unwrap_error_fraction: float = _f(
        0.15,
        "Fraction of pairs whose unwrapping offsets the components cut off by the river by 2 pi.",
        float,
        ge=0,
        le=1,
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            kind = f.metadata["kind"]
            if value is None and f.name == "reference_date":
                continue
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            elif kind is tuple and isinstance(value, list):
                value = tuple(value)
            if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
                raise ValueError(
                    f"{f.name}: {value!r} is not a {kind.__name__} ({f.metadata['description']})"
                )
            for op, bound in f.metadata.items():
                check = _LIMITS.get(op)
                if check is not None and not check[0](value, bound):
                    raise ValueError(f"{f.name}: {value!r} must be {check[1]} {bound}")
            object.__setattr__(self, f.name, value)
        self._check()

    def _check(self) -> None:
        for d in self.dates:
            try:
                datetime.strptime(d, DATE_FORMAT)
            except (TypeError, ValueError):
                raise ValueError(f"dates: {d!r} is not YYYYMMDD; fix: e.g. '20250406'") from None
        if len(self.dates) < 2 or len(set(self.dates)) != len(self.dates):
            raise ValueError(f"dates: {list(self.dates)} must hold at least two different dates")
        object.__setattr__(self, "dates", tuple(sorted(self.dates)))
        if (
            not self.swaths
            or any(s not in (1, 2, 3) for s in self.swaths)
            or len(set(self.swaths)) != len(self.swaths)
        ):
            raise ValueError(f"swaths: {list(self.swaths)} must be a non-empty subset of 1, 2, 3")
        object.__setattr__(self, "swaths", tuple(sorted(self.swaths)))
        if self.reference_date is not None and self.reference_date not in self.dates:
            raise ValueError(
                f"reference_date: {self.reference_date} is not one of the dates; pick one of "
                f"{self.dates[0]}..{self.dates[-1]} or leave it empty"
            )
        if self.platform not in ("S1A", "S1B", "S1C"):
            raise ValueError(f"platform: {self.platform!r} must be S1A, S1B or S1C")
        if self.flight_direction not in ("ASCENDING", "DESCENDING"):
            raise ValueError(
                f"flight_direction: {self.flight_direction!r} must be ASCENDING or DESCENDING"
            )
        if not re.fullmatch(r"\d\d:\d\d:\d\d\.\d{6}", self.sensing_time):
            raise ValueError(f"sensing_time: {self.sensing_time!r} must be HH:MM:SS.ffffff")
        if len(self.dem_bbox) != 4:
            raise ValueError(f"dem_bbox: {self.dem_bbox!r} must be four numbers S N W E")
        if self.length < 2 * self.bursts_per_swath:
            raise ValueError(
                f"length: {self.length} is too short for {self.bursts_per_swath} bursts per swath; "
                "give at least 2 lines per burst"
            )

    @property
    def reference(self) -> str:
        """The reference date: ``reference_date`` or the first date."""
        return self.reference_date or self.dates[0]

    @classmethod
    def regular(
        cls, start: date, count: int, interval_days: int = 12, **overrides: Any
    ) -> SceneSpec:
        """A spec with ``count`` dates every ``interval_days`` from ``start``."""
        dates = tuple(
            (start + timedelta(days=interval_days * i)).strftime(DATE_FORMAT) for i in range(count)
        )
        return cls(dates=dates, **overrides)

    def replace(self, **changes: Any) -> SceneSpec:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SceneSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown scene spec keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> SceneSpec:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a scene spec is a JSON object")
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: Path) -> SceneSpec:
        """Read a spec file; the error names the file."""
        try:
            return cls.from_json(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"scene spec {path} not found") from None
        except ValueError as exc:
            raise ValueError(f"scene spec {path} is invalid: {exc}") from exc

    # derived timing / geometry numbers used by several modules
    def first_line_time(self, day: str) -> datetime:
        """UTC time of the first (full-resolution) line on ``day``."""
        return datetime.strptime(f"{day} {self.sensing_time}", f"{DATE_FORMAT} %H:%M:%S.%f")

    @property
    def full_length(self) -> int:
        return self.length * self.azimuth_looks

    @property
    def full_width(self) -> int:
        return self.width * self.range_looks

    @property
    def satellite_speed(self) -> float:
        return float(np.sqrt(EARTH_GM / (EARTH_RADIUS_M + self.satellite_height_m)))

    @property
    def ground_speed(self) -> float:
        r = EARTH_RADIUS_M
        return self.satellite_speed * r / (r + self.satellite_height_m)


def default_demo_spec(
    start: date = date(2024, 12, 1), count: int = 12, **overrides: Any
) -> SceneSpec:
    """The demo scene: 12 dates every 36 days from 2024-12-01, 150 x 200 pixels."""
    return SceneSpec.regular(start, count, 36, **overrides)


# ----------------------------------------------------------------------------- seeding


def _rng(seed: int, *keys: str) -> np.random.Generator:
    entropy = [seed] + [zlib.crc32(k.encode()) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def _hash_fraction(seed: int, *keys: str) -> float:
    """A deterministic number in [0, 1) from the seed and keys."""
    return zlib.crc32(":".join([str(seed), *keys]).encode()) / 2**32


def _gaussian_filtered_noise(
    rng: np.random.Generator, shape: tuple[int, int], scale: float
) -> FloatArray:
    """Unit-variance noise low-passed by a Gaussian of ``scale`` pixels (FFT, periodic)."""
    noise = rng.standard_normal(shape)
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.rfftfreq(shape[1])[None, :]
    kernel = np.exp(-2.0 * (np.pi * scale) ** 2 * (kx**2 + ky**2))
    out = np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=shape)
    std = out.std()
    return np.asarray(out / std if std > 0 else out, dtype=np.float64)


# ----------------------------------------------------------------------------- geometry


def destination(lat: float, lon: float, east: float, north: float) -> tuple[float, float]:
    """Lat/lon (deg) reached from (lat, lon) by a great-circle offset of (east, north) metres."""
    dist = float(np.hypot(east, north)) / EARTH_RADIUS_M
    bearing = float(np.arctan2(east, north))
    phi1, lam1 = np.radians(lat), np.radians(lon)
    phi2 = np.arcsin(np.sin(phi1) * np.cos(dist) + np.cos(phi1) * np.sin(dist) * np.cos(bearing))
    lam2 = lam1 + np.arctan2(
        np.sin(bearing) * np.sin(dist) * np.cos(phi1), np.cos(dist) - np.sin(phi1) * np.sin(phi2)
    )
    return float(np.degrees(phi2)), float((np.degrees(lam2) + 180.0) % 360.0 - 180.0)


def llh_to_ecef(lat: float, lon: float, height: float) -> FloatArray:
    """WGS84 geodetic -> ECEF (m)."""
    phi, lam = np.radians(lat), np.radians(lon)
    n = WGS84_A / np.sqrt(1 - WGS84_E2 * np.sin(phi) ** 2)
    return np.array(
        [
            (n + height) * np.cos(phi) * np.cos(lam),
            (n + height) * np.cos(phi) * np.sin(lam),
            (n * (1 - WGS84_E2) + height) * np.sin(phi),
        ]
    )


def _track_vectors(spec: SceneSpec) -> tuple[FloatArray, FloatArray]:
    """Unit (east, north) vectors along the flight and towards far range (right-looking)."""
    h = np.radians(spec.heading_deg)
    along = np.array([np.sin(h), np.cos(h)])
    across = np.array([np.cos(h), -np.sin(h)])
    return along, across


def los_azimuth_deg(spec: SceneSpec) -> float:
    """ISCE2 LOS azimuth: target-to-platform direction, degrees from north, anti-clockwise."""
    az = 90.0 - spec.heading_deg
    return float(az - 360.0 * np.round(az / 360.0))


def satellite_state(spec: SceneSpec, day: str, when: datetime) -> tuple[FloatArray, FloatArray]:
    """ECEF position and velocity at ``when`` (a circular orbit beside the scene)."""
    _, across = _track_vectors(spec)
    inc_mid = np.radians(0.5 * (spec.incidence_near_deg + spec.incidence_far_deg))
    offset = spec.satellite_height_m * np.tan(inc_mid)
    centre_time = spec.first_line_time(day) + timedelta(
        seconds=(spec.length - 1) / 2 * spec.azimuth_looks * spec.azimuth_time_interval_s
    )

    # the sub-satellite point abeam the scene centre; the track leaves it along ``heading``
    lat0, lon0 = destination(
        spec.center_lat, spec.center_lon, float(-offset * across[0]), float(-offset * across[1])
    )
    h = np.radians(spec.heading_deg)

    def position(t: float) -> FloatArray:
        s = spec.ground_speed * t
        lat, lon = destination(lat0, lon0, float(s * np.sin(h)), float(s * np.cos(h)))
        return llh_to_ecef(lat, lon, spec.satellite_height_m)

    t = (when - centre_time).total_seconds()
    pos = position(t)
    vel = position(t + 0.5) - position(t - 0.5)
    return pos, vel


def _geolocation(spec: SceneSpec) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """(east, north) metres from the scene centre, then lat, lon of every pixel."""
    length, width = spec.length, spec.width
    inc = np.radians(np.linspace(spec.incidence_near_deg, spec.incidence_far_deg, width))
    ground_step = spec.range_looks * spec.range_pixel_size_m / np.sin(inc)
    ground = np.concatenate([[0.0], np.cumsum(ground_step[:-1])])
    ground -= 0.5 * (ground[0] + ground[-1])
    az_step = spec.azimuth_looks * spec.azimuth_time_interval_s * spec.ground_speed
    az = (np.arange(length) - (length - 1) / 2) * az_step
    along, across = _track_vectors(spec)
    east = az[:, None] * along[0] + ground[None, :] * across[0]
    north = az[:, None] * along[1] + ground[None, :] * across[1]
    lat = spec.center_lat + np.degrees(north / EARTH_RADIUS_M)
    lon = spec.center_lon + np.degrees(
        east / (EARTH_RADIUS_M * np.cos(np.radians(spec.center_lat)))
    )
    return east, north, lat, lon


@dataclass(frozen=True)
class Hill:
    east: float
    north: float
    sigma: float
    height: float


BOWL_CENTRE = (0.45, 0.55)  # the subsidence bowl's (row, column), fractions of the scene


def _bowl_centre_m(spec: SceneSpec) -> tuple[float, float, float]:
    """(east, north) metres of the bowl centre from the scene centre, and its sigma (m)."""
    east, north, _, _ = _geolocation(spec)
    r = round(BOWL_CENTRE[0] * (spec.length - 1))
    c = round(BOWL_CENTRE[1] * (spec.width - 1))
    az_step = spec.azimuth_looks * spec.azimuth_time_interval_s * spec.ground_speed
    sigma = spec.subsidence_sigma_fraction * (spec.length - 1) * az_step
    return float(east[r, c]), float(north[r, c]), float(sigma)


def _hills(spec: SceneSpec, half_extent: float) -> list[Hill]:
    """Gaussian hills away from the subsidence bowl: the subsidence is in the plain, so
    height-correlated delays and deformation do not share one pattern."""
    rng = _rng(spec.seed, "topography")
    bowl_e, bowl_n, bowl_sigma = _bowl_centre_m(spec)
    hills = []
    for _ in range(spec.hill_count):
        for _ in range(100):
            e, n = rng.uniform(-half_extent, half_extent, 2)
            sigma = rng.uniform(0.12, 0.3) * half_extent
            if np.hypot(e - bowl_e, n - bowl_n) >= 1.5 * (bowl_sigma + sigma):
                break
        height = rng.uniform(0.3, 1.0) * spec.hill_height_m
        hills.append(Hill(float(e), float(n), float(sigma), float(height)))
    return hills


def topography_at(spec: SceneSpec, east: FloatArray, north: FloatArray) -> FloatArray:
    """Terrain height (m) at local (east, north) metres from the scene centre."""
    half = _half_extent(spec)
    z = np.full(np.shape(east), spec.base_height_m, dtype=np.float64)
    for hill in _hills(spec, half):
        z += hill.height * np.exp(
            -((east - hill.east) ** 2 + (north - hill.north) ** 2) / (2 * hill.sigma**2)
        )
    return z


def _half_extent(spec: SceneSpec) -> float:
    az = spec.length * spec.azimuth_looks * spec.azimuth_time_interval_s * spec.ground_speed
    inc = np.radians(0.5 * (spec.incidence_near_deg + spec.incidence_far_deg))
    rg = spec.width * spec.range_looks * spec.range_pixel_size_m / np.sin(inc)
    return float(0.5 * min(az, rg))


# ----------------------------------------------------------------------------- truth


@dataclass(frozen=True)
class SceneTruth:
    """The known truth of a scene on the multilooked radar grid (SI units, float64)."""

    spec: SceneSpec
    lat: FloatArray
    lon: FloatArray
    topography: FloatArray  # DEM height (m); what topo writes to hgt.rdr
    dem_error: FloatArray  # true height minus DEM height (m)
    velocity: FloatArray  # LOS velocity (m/yr), positive towards the satellite
    incidence_deg: FloatArray
    los_azimuth_deg: float
    slant_range: FloatArray  # (width,) slant range of each column (m)
    water: BoolArray  # a river cutting off the far-range, late-azimuth corner
    island: BoolArray  # the land the river cuts off (for checks; steps never read it)
    seasonal: FloatArray  # amplitude of the annual LOS displacement (m)
    stability: FloatArray  # spatial scaling of the coherence model, in (0, 1]
    amplitude: FloatArray
    speckle_phase: FloatArray
    _cache: dict[str, FloatArray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.spec.length, self.spec.width)

    @property
    def coherent_mask(self) -> BoolArray:
        """Pixels that stay coherent (everything but water)."""
        return ~self.water

    def years_since_reference(self, day: str) -> float:
        ref = datetime.strptime(self.spec.reference, DATE_FORMAT)
        return (datetime.strptime(day, DATE_FORMAT) - ref).days / DAYS_PER_YEAR

    def bperp(self, day: str) -> float:
        """Perpendicular baseline of ``day`` relative to the reference date (m)."""
        return _raw_bperp(self.spec, day) - _raw_bperp(self.spec, self.spec.reference)

    def bpar(self, day: str) -> float:
        """Parallel baseline of ``day`` relative to the reference date (m)."""
        return _raw_bpar(self.spec, day) - _raw_bpar(self.spec, self.spec.reference)

    def stratified_coefficient(self, day: str) -> float:
        """Height-correlated delay of ``day``, m of LOS delay per m of height."""
        rng = _rng(self.spec.seed, "stratified", day)
        return float(rng.standard_normal() * self.spec.stratified_std_m_per_km / 1000.0)

    def atmosphere(self, day: str) -> FloatArray:
        """Atmospheric delay of ``day`` in LOS displacement units (m): turbulent + stratified."""
        key = f"atmo:{day}"
        if key not in self._cache:
            rng = _rng(self.spec.seed, "atmosphere", day)
            field_ = _gaussian_filtered_noise(rng, self.shape, self.spec.atmosphere_scale_px)
            height = self.topography + self.dem_error
            stratified = self.stratified_coefficient(day) * (height - height.mean())
            self._cache[key] = self.spec.atmosphere_std_m * field_ + stratified
        return self._cache[key]

    def _annual(self, day: str) -> float:
        when = datetime.strptime(day, DATE_FORMAT)
        return float(np.sin(2 * np.pi * (when.timetuple().tm_yday - 1) / DAYS_PER_YEAR))

    def displacement(self, day: str) -> FloatArray:
        """LOS displacement of ``day`` relative to the reference date (m)."""
        annual = self._annual(day) - self._annual(self.spec.reference)
        return self.velocity * self.years_since_reference(day) + self.seasonal * annual

    def dem_error_term(self, day: str) -> FloatArray:
        """Range change (m) caused by the DEM error at the baseline of ``day``."""
        sin_inc = np.sin(np.radians(self.incidence_deg))
        return self.bperp(day) * self.dem_error / (self.slant_range[None, :] * sin_inc)

    def range_change(self, day: str) -> FloatArray:
        """Everything the phase of ``day`` sees, in LOS metres (positive towards the satellite)."""
        return self.displacement(day) + self.atmosphere(day) + self.dem_error_term(day)

    def slc(self, day: str) -> ComplexArray:
        """The (multilooked-grid) SLC of ``day``: amplitude and signal phase plus speckle phase."""
        phase = self.speckle_phase + 4 * np.pi / self.spec.wavelength_m * self.range_change(day)
        return (self.amplitude * np.exp(1j * phase)).astype(np.complex64)

    def coherence(self, day1: str, day2: str) -> FloatArray:
        """Expected coherence of the pair (temporal decorrelation, water near zero)."""
        spec = self.spec
        dt = abs((datetime.strptime(day2, DATE_FORMAT) - datetime.strptime(day1, DATE_FORMAT)).days)
        temporal = spec.coherence_floor + (spec.coherence_initial - spec.coherence_floor) * np.exp(
            -dt / spec.coherence_decay_days
        )
        gamma = temporal * self.stability
        return np.where(self.water, spec.water_coherence, gamma)


def _raw_bperp(spec: SceneSpec, day: str) -> float:
    return float(_rng(spec.seed, "bperp", day).uniform(-spec.bperp_max_m, spec.bperp_max_m))


def _raw_bpar(spec: SceneSpec, day: str) -> float:
    return float(_rng(spec.seed, "bpar", day).uniform(-0.5, 0.5) * spec.bperp_max_m)


def make_truth(spec: SceneSpec) -> SceneTruth:
    """Build the truth of ``spec`` (reproducible from the seed; fast at demo sizes)."""
    length, width = spec.length, spec.width
    east, north, lat, lon = _geolocation(spec)
    rows = (np.arange(length) / (length - 1))[:, None] * np.ones((1, width))
    cols = np.ones((length, 1)) * (np.arange(width) / (width - 1))[None, :]

    topo = topography_at(spec, east, north)

    rng = _rng(spec.seed, "dem_error")
    dem_error = np.zeros((length, width))
    for _ in range(2):
        r0, c0 = rng.uniform(0.2, 0.8, 2)
        s = rng.uniform(0.06, 0.12)
        amp = rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 1.0) * spec.dem_error_max_m
        dem_error += amp * np.exp(-((rows - r0) ** 2 + (cols - c0) ** 2) / (2 * s**2))

    sigma = spec.subsidence_sigma_fraction
    r0, c0 = BOWL_CENTRE
    bowl = np.exp(-((rows - r0) ** 2 + (cols - c0) ** 2) / (2 * sigma**2))
    velocity = spec.subsidence_rate_m_per_yr * bowl + spec.ramp_m_per_yr * (cols - 0.5)

    # a river from (row 1.35, col 0) to (row 0.45, col 1) cuts off the corner beyond it;
    # at least 12 lines wide, so that 5 x 5 coherence windows find it decorrelated
    across_river = rows - (1.35 - 0.9 * cols)
    half_width = max(0.04, 6 / (length - 1))
    water = np.abs(across_river) < half_width
    island = across_river >= half_width

    stability = 0.75 + 0.25 * (
        0.5
        + 0.5
        * np.tanh(_gaussian_filtered_noise(_rng(spec.seed, "stability"), (length, width), 6.0))
    )
    texture = _gaussian_filtered_noise(_rng(spec.seed, "amplitude"), (length, width), 2.0)
    slope = np.hypot(*np.gradient(topo))
    amplitude = np.exp(0.3 * texture) * (1.0 + 0.02 * slope)
    amplitude = np.where(water, 0.1, amplitude)
    speckle = _rng(spec.seed, "speckle").uniform(-np.pi, np.pi, (length, width))

    incidence = np.linspace(spec.incidence_near_deg, spec.incidence_far_deg, width)[
        None, :
    ] * np.ones((length, 1))
    slant = spec.starting_range_m + np.arange(width, dtype=np.float64) * (
        spec.range_looks * spec.range_pixel_size_m
    )
    return SceneTruth(
        spec=spec,
        lat=lat,
        lon=lon,
        topography=topo,
        dem_error=dem_error,
        velocity=velocity,
        incidence_deg=incidence,
        los_azimuth_deg=los_azimuth_deg(spec),
        slant_range=slant,
        water=water,
        island=island,
        seasonal=spec.seasonal_amplitude_m * bowl,
        stability=stability,
        amplitude=amplitude,
        speckle_phase=speckle,
    )


# ----------------------------------------------------------------------------- pairs


def signal_phase(truth: SceneTruth, day1: str, day2: str) -> FloatArray:
    """Noise-free interferometric phase of the pair (radians)."""
    return (
        -4 * np.pi / truth.spec.wavelength_m * (truth.range_change(day2) - truth.range_change(day1))
    )


def pair_looks(spec: SceneSpec) -> int:
    return spec.range_looks * spec.azimuth_looks


def pair_noise(truth: SceneTruth, day1: str, day2: str) -> npt.NDArray[np.complex128]:
    """Multiplicative decorrelation noise of the multilooked pair (complex, mean ~ coherence)."""
    gamma = truth.coherence(day1, day2)
    rng = _rng(truth.spec.seed, "noise", day1, day2)
    looks = pair_looks(truth.spec)
    n = rng.standard_normal((2, *truth.shape))
    spread = np.sqrt((1 - gamma**2) / (2 * looks))
    return gamma + spread * (n[0] + 1j * n[1])


def has_unwrapping_error(spec: SceneSpec, day1: str, day2: str) -> bool:
    """Whether this pair's unwrapping offsets the smaller connected components by 2 pi."""
    return _hash_fraction(spec.seed, "unwrap", day1, day2) < spec.unwrap_error_fraction


def unwrapping_error_cycles(spec: SceneSpec, day1: str, day2: str) -> int:
    """The 2 pi cycles (+-1, or 0 for most pairs) added to the smaller connected components."""
    if not has_unwrapping_error(spec, day1, day2):
        return 0
    return 1 if _hash_fraction(spec.seed, "unwrap-sign", day1, day2) < 0.5 else -1


# ----------------------------------------------------------------------------- truth.h5


def write_truth(path: Path, truth: SceneTruth) -> Path:
    """Write the truth MintPy results are compared with (HDF5, atomically)."""
    import h5py

    spec = truth.spec
    with atomic.replacing(path) as tmp, h5py.File(tmp, "w", track_order=True) as f:
        f.attrs["description"] = "insarflow simulator truth, multilooked radar geometry"
        f.attrs["reference_date"] = spec.reference
        f.attrs["wavelength_m"] = spec.wavelength_m
        f.attrs["seed"] = spec.seed
        f.attrs["length"] = spec.length
        f.attrs["width"] = spec.width
        datasets: dict[str, tuple[npt.NDArray[np.generic], str]] = {
            "velocity": (
                truth.velocity.astype(np.float32),
                "m/year, LOS, positive towards satellite",
            ),
            "mask": (truth.coherent_mask.astype(np.uint8), "1 = coherent pixel"),
            "dates": (np.array(spec.dates, dtype="S8"), "YYYYMMDD"),
            "bperp": (np.array([truth.bperp(d) for d in spec.dates]), "m, relative to reference"),
            "height": (truth.topography.astype(np.float32), "m, DEM height (hgt.rdr)"),
            "dem_error": (truth.dem_error.astype(np.float32), "m, true height minus DEM"),
            "latitude": (truth.lat, "degrees"),
            "longitude": (truth.lon, "degrees"),
            "incidence_angle": (truth.incidence_deg.astype(np.float32), "degrees"),
        }
        for name, (data, units) in datasets.items():
            ds = f.create_dataset(name, data=data, track_times=False)
            ds.attrs["units"] = units
    return path
