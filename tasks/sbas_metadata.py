"""MintPy metadata for ISCE2 topsStack products, computed without ISCE2.

MintPy's ``prep_isce`` reads ``reference/IW*.xml`` through the ``isce`` module
(``isce_utils.extract_tops_metadata``); without ISCE2 it fails and ``load_data``
later dies with ``KeyError: 'STARTING_RANGE'``. MintPy skips that extraction when
``reference/data.rsc`` is newer than the XML, so this module writes ``data.rsc``
itself, with the values ISCE2 + MintPy would compute:

- the burst parameters straight from the XML (PRF, wavelength, starting range of
  the first burst, range pixel size, pass direction, track/orbit numbers ...);
- the satellite state at the first burst's mid sensing time, from ISCE2's 4-point
  Hermite interpolation of the orbit state vectors: speed, ENU heading, height
  above WGS-84 and the ellipsoid's radius of curvature along the heading;
- azimuth pixel size = speed x azimuth time interval (as MintPy does), both pixel
  sizes scaled by the looks found by comparing ``*.rdr.xml`` with ``*.rdr.full.xml``;
- scene corners, size and centre incidence angle from ``merged/geom_reference``.
"""

from __future__ import annotations

import ast
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt

from insarflow import atomic
from insarflow.tasks.isce_io import read_isce_info, read_isce_raster

# WGS-84 as ISCE2's AstronomicalHandbook defines it.
WGS84_A = 6378137.0
WGS84_E2 = 0.0066943799901

# Sentinel-1 IW resolutions used by MintPy (mintpy.objects.sensor.SENSOR_DICT['sen']).
S1_IW_RESOLUTION = {
    "IW1": {"range": 2.7, "azimuth": 22.5},
    "IW2": {"range": 3.1, "azimuth": 22.7},
    "IW3": {"range": 3.5, "azimuth": 22.6},
}

GEOMETRY_FEXTS = (".rdr", ".geo", ".rdr.full", ".geo.full")

# Keys MintPy's load_data and later steps cannot do without; checked after writing.
REQUIRED_KEYS = (
    "ALOOKS",
    "RLOOKS",
    "AZIMUTH_PIXEL_SIZE",
    "RANGE_PIXEL_SIZE",
    "CENTER_LINE_UTC",
    "EARTH_RADIUS",
    "HEADING",
    "HEIGHT",
    "LAT_REF1",
    "LAT_REF2",
    "LAT_REF3",
    "LAT_REF4",
    "LON_REF1",
    "LON_REF2",
    "LON_REF3",
    "LON_REF4",
    "LENGTH",
    "WIDTH",
    "ORBIT_DIRECTION",
    "PLATFORM",
    "PRF",
    "PROCESSOR",
    "STARTING_RANGE",
    "WAVELENGTH",
    "ANTENNA_SIDE",
)


class MetadataError(ValueError):
    """The ISCE2 products do not hold what MintPy needs."""


@dataclass(frozen=True)
class StateVector:
    time: datetime
    position: tuple[float, float, float]
    velocity: tuple[float, float, float]


@dataclass(frozen=True)
class Burst:
    """The fields of an ISCE2 ``BurstSLC`` that MintPy's metadata uses."""

    prf: float
    burst_start_utc: datetime
    burst_stop_utc: datetime
    sensing_start: datetime
    sensing_stop: datetime
    radar_wavelength: float
    starting_range: float
    range_pixel_size: float
    azimuth_time_interval: float
    pass_direction: str
    polarization: str
    track_number: int
    orbit_number: int
    swath_number: int
    orbit: tuple[StateVector, ...]

    @property
    def sensing_mid(self) -> datetime:
        # Same expression as ISCE2's BurstSLC.sensingMid (timedelta rounding included).
        return self.sensing_start + 0.5 * (self.sensing_stop - self.sensing_start)


@dataclass(frozen=True)
class TopsProduct:
    """A ``reference/IW*.xml`` (ISCE2 ``TOPSSwathSLCProduct``)."""

    path: Path
    spacecraft_name: str
    mission: str
    ascending_node_time: datetime
    bursts: tuple[Burst, ...]


# ----------------------------------------------------------------------------- XML
def _parse_time(text: str, where: str) -> datetime:
    value = text.strip().replace("T", " ")
    for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(value, fmt)
        except ValueError:
            continue
    raise MetadataError(f"{where}: cannot parse time {text!r} (expected 'YYYY-MM-DD HH:MM:SS[.f]')")


def _props(elem: ET.Element) -> dict[str, str]:
    return {
        (p.get("name") or "").lower(): (p.findtext("value") or "").strip()
        for p in elem.findall("property")
    }


def _component(elem: ET.Element, name: str, where: str) -> ET.Element:
    found = elem.find(f"component[@name='{name}']")
    if found is None:
        raise MetadataError(f"{where}: component {name!r} not found")
    return found


def _sequence(elem: ET.Element) -> list[ET.Element]:
    """Children of an ISCE2 trait sequence, in the order of its ``name`` list."""
    children = {c.get("name"): c for c in elem.findall("component")}
    names_text = _props(elem).get("name", "")
    try:
        names = ast.literal_eval(names_text) if names_text.startswith("[") else []
    except (ValueError, SyntaxError):
        names = []
    if names and all(n in children for n in names):
        return [children[n] for n in names]
    return list(children.values())


def _vector(text: str, where: str) -> tuple[float, float, float]:
    try:
        values = [float(v) for v in ast.literal_eval(text)]
    except (ValueError, SyntaxError, TypeError) as exc:
        raise MetadataError(f"{where}: cannot parse vector {text!r}") from exc
    if len(values) != 3:
        raise MetadataError(f"{where}: expected 3 components, got {text!r}")
    return values[0], values[1], values[2]


def _parse_burst(elem: ET.Element, where: str) -> Burst:
    props = _props(elem)
    try:
        orbit_elem = _component(_component(elem, "orbit", where), "state_vectors", where)
        vectors = []
        for sv in _sequence(orbit_elem):
            sv_props = _props(sv)
            sv_where = f"{where}/{sv.get('name')}"
            vectors.append(
                StateVector(
                    time=_parse_time(sv_props["time"], sv_where),
                    position=_vector(sv_props["position"], sv_where),
                    velocity=_vector(sv_props["velocity"], sv_where),
                )
            )
        return Burst(
            prf=float(props["pulserepetitionfrequency"]),
            burst_start_utc=_parse_time(props["burststartutc"], where),
            burst_stop_utc=_parse_time(props["burststoputc"], where),
            sensing_start=_parse_time(props["sensingstart"], where),
            sensing_stop=_parse_time(props["sensingstop"], where),
            radar_wavelength=float(props["radarwavelength"]),
            starting_range=float(props["startingrange"]),
            range_pixel_size=float(props["rangepixelsize"]),
            azimuth_time_interval=float(props["azimuthtimeinterval"]),
            pass_direction=props["passdirection"],
            polarization=props["polarization"],
            track_number=int(props["tracknumber"]),
            orbit_number=int(props["orbitnumber"]),
            swath_number=int(props["swathnumber"]),
            orbit=tuple(sorted(vectors, key=lambda v: v.time)),
        )
    except KeyError as exc:
        raise MetadataError(f"{where}: property {exc.args[0]!r} missing") from exc
    except ValueError as exc:
        if isinstance(exc, MetadataError):
            raise
        raise MetadataError(f"{where}: {exc}") from exc


def read_tops_product(xml_path: Path) -> TopsProduct:
    """Parse an ISCE2 topsStack ``reference/IW*.xml``."""
    where = str(xml_path)
    if not xml_path.is_file():
        raise MetadataError(
            f"{xml_path} not found; topsStack writes it in run_01 (unpack reference)"
        )
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise MetadataError(f"{where}: not valid XML ({exc})") from exc
    instance = _component(root, "instance", where)
    props = _props(instance)
    bursts_elem = _component(instance, "bursts", where)
    bursts = tuple(_parse_burst(b, f"{where}: {b.get('name')}") for b in _sequence(bursts_elem))
    if not bursts:
        raise MetadataError(f"{where}: no bursts")
    if "ascendingnodetime" not in props:
        raise MetadataError(f"{where}: property 'ascendingnodetime' missing")
    return TopsProduct(
        path=xml_path,
        spacecraft_name=props.get("spacecraftname", ""),
        mission=props.get("mission", ""),
        ascending_node_time=_parse_time(props["ascendingnodetime"], where),
        bursts=bursts,
    )


# ------------------------------------------------------------------- orbit geometry
def _seconds(td: timedelta) -> float:
    return (td.microseconds + (td.seconds + td.days * 24 * 3600.0) * 10**6) / 10**6


def _hermite4(
    t: Sequence[float], x: npt.NDArray[np.float64], v: npt.NDArray[np.float64], time: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """ISCE2's ``orbithermite.F``: Hermite interpolation through 4 state vectors."""
    n = 4
    f0 = np.empty(n)
    f1 = np.empty(n)
    h = np.empty(n)
    hdot = np.empty(n)
    g0 = np.empty(n)
    g1 = np.empty(n)
    for i in range(n):
        f1[i] = time - t[i]
        s = sum(1.0 / (t[i] - t[j]) for j in range(n) if j != i)
        f0[i] = 1.0 - 2.0 * (time - t[i]) * s
    for i in range(n):
        prod = 1.0
        for k in range(n):
            if k != i:
                prod *= (time - t[k]) / (t[i] - t[k])
        h[i] = prod
        s = 0.0
        for j in range(n):
            prod = 1.0
            for k in range(n):
                if k != i and k != j:
                    prod *= (time - t[k]) / (t[i] - t[k])
            if j != i:
                s += 1.0 / (t[i] - t[j]) * prod
        hdot[i] = s
    for i in range(n):
        g1[i] = h[i] + 2.0 * (time - t[i]) * hdot[i]
        s = sum(1.0 / (t[i] - t[j]) for j in range(n) if j != i)
        g0[i] = 2.0 * (f0[i] * hdot[i] - h[i] * s)
    pos = ((x * f0[:, None] + v * f1[:, None]) * (h * h)[:, None]).sum(axis=0)
    vel = ((x * g0[:, None] + v * g1[:, None]) * h[:, None]).sum(axis=0)
    return pos, vel


def interpolate_orbit(
    orbit: Sequence[StateVector], time: datetime
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Position and velocity at ``time`` as ISCE2's ``Orbit.interpolateOrbit(method='hermite')``."""
    if len(orbit) < 4:
        raise MetadataError(f"orbit has {len(orbit)} state vectors; Hermite interpolation needs 4")
    t_min, t_max = orbit[0].time, orbit[-1].time
    if not t_min <= time <= t_max:
        raise MetadataError(f"time {time} is outside the orbit's span [{t_min}, {t_max}]")
    after = next((i for i, sv in enumerate(orbit) if sv.time > time), len(orbit))
    for before_n, after_n in ((2, 2), (1, 3), (3, 1)):
        lo, hi = after - before_n, after + after_n
        if lo >= 0 and hi <= len(orbit):
            break
    else:  # pragma: no cover - impossible with >= 4 vectors inside the span
        raise MetadataError(f"cannot select 4 state vectors around {time}")
    chosen = orbit[lo:hi]
    t = [_seconds(sv.time - t_min) for sv in chosen]
    x = np.array([sv.position for sv in chosen], dtype=np.float64)
    v = np.array([sv.velocity for sv in chosen], dtype=np.float64)
    return _hermite4(t, x, v, _seconds(time - t_min))


def xyz_to_llh(
    xyz: Sequence[float] | npt.NDArray[np.float64], a: float = WGS84_A, e2: float = WGS84_E2
) -> tuple[float, float, float]:
    """ECEF -> geodetic (deg, deg, m), Vermeille's closed form as ISCE2's Ellipsoid uses."""
    x, y, z = (float(c) for c in xyz)
    a2 = a**2
    e4 = e2**2
    xy2 = x**2 + y**2
    p = xy2 / a2
    q = (1.0 - e2) * z**2 / a2
    r = (p + q - e4) / 6.0
    s = e4 * p * q / (4.0 * r**3)
    t = (1.0 + s + math.sqrt(s * (2.0 + s))) ** (1.0 / 3.0)
    u = r * (1.0 + t + 1.0 / t)
    v = math.sqrt(u**2 + e4 * q)
    w = e2 * (u + v - q) / (2.0 * v)
    k = math.sqrt(u + v + w**2) - w
    d = k * math.sqrt(xy2) / (k + e2)
    lat = math.atan2(z, d)
    lon = math.atan2(y, x)
    hgt = (k + e2 - 1.0) * math.sqrt(d**2 + z**2) / k
    return math.degrees(lat), math.degrees(lon), hgt


def enu_heading(llh: Sequence[float], velocity: Sequence[float] | npt.NDArray[np.float64]) -> float:
    """Heading (deg from north, clockwise) of ``velocity`` in the local ENU frame."""
    lat, lon = math.radians(llh[0]), math.radians(llh[1])
    east = np.array([-math.sin(lon), math.cos(lon), 0.0])
    north = np.array(
        [-math.sin(lat) * math.cos(lon), -math.sin(lat) * math.sin(lon), math.cos(lat)]
    )
    vel = np.asarray(velocity, dtype=np.float64)
    return float(np.degrees(np.arctan2(east @ vel, north @ vel)))


def radius_of_curvature(
    lat_deg: float, heading_deg: float, a: float = WGS84_A, e2: float = WGS84_E2
) -> float:
    """Ellipsoid radius of curvature along ``heading`` at ``lat`` (ISCE2's ``pegRadCur``)."""
    lat = math.radians(lat_deg)
    hdg = math.radians(heading_deg)
    east = a / math.sqrt(1.0 - e2 * math.sin(lat) ** 2)
    north = a * (1.0 - e2) / (1.0 - e2 * math.sin(lat) ** 2) ** 1.5
    return (east * north) / (east * math.cos(hdg) ** 2 + north * math.sin(hdg) ** 2)


# ------------------------------------------------------------------------- metadata
def _standardize_sensor(name: str) -> str:
    from mintpy.objects import sensor

    return str(sensor.standardize_sensor_name(name))


def tops_metadata(xml_path: Path) -> dict[str, object]:
    """What ``mintpy.utils.isce_utils.extract_tops_metadata`` returns, without ISCE2."""
    product = read_tops_product(xml_path)
    burst = product.bursts[0]
    last = product.bursts[-1]
    meta: dict[str, object] = {
        "prf": burst.prf,
        "startUTC": burst.burst_start_utc,
        "stopUTC": last.burst_stop_utc,
        "radarWavelength": burst.radar_wavelength,
        "startingRange": burst.starting_range,
        "passDirection": burst.pass_direction,
        "polarization": burst.polarization,
        "trackNumber": burst.track_number,
        "orbitNumber": burst.orbit_number,
    }
    platform = _standardize_sensor(product.spacecraft_name) if product.spacecraft_name else ""
    if not platform and xml_path.name.startswith("IW"):
        platform = "sen"
    meta["PLATFORM"] = platform

    mid = burst.sensing_mid
    meta["CENTER_LINE_UTC"] = mid.hour * 3600.0 + mid.minute * 60.0 + mid.second

    position, velocity = interpolate_orbit(burst.orbit, mid)
    speed = float(np.linalg.norm(velocity))
    meta["satelliteSpeed"] = speed
    meta["azimuthPixelSize"] = speed * burst.azimuth_time_interval
    meta["rangePixelSize"] = burst.range_pixel_size

    iw = xml_path.stem if xml_path.name.startswith("IW") else "IW2"
    if iw not in S1_IW_RESOLUTION:
        raise MetadataError(f"{xml_path}: unknown swath {iw!r}; expected IW1, IW2 or IW3")
    meta["azimuthResolution"] = S1_IW_RESOLUTION[iw]["azimuth"]
    meta["rangeResolution"] = S1_IW_RESOLUTION[iw]["range"]

    llh = xyz_to_llh(position)
    heading = enu_heading(llh, velocity)
    meta["HEADING"] = heading
    meta["earthRadius"] = radius_of_curvature(llh[0], heading)
    meta["altitude"] = llh[2]

    meta["beam_mode"] = "IW"
    meta["swathNumber"] = burst.swath_number
    xml_files = sorted(xml_path.parent.glob("IW*.xml"))
    if len(xml_files) > 1:
        swaths = sorted(read_tops_product(p).bursts[0].swath_number for p in xml_files)
        meta["swathNumber"] = "".join(str(s) for s in swaths)

    node = product.ascending_node_time
    meta["firstFrameNumber"] = int(0.2 * (burst.burst_start_utc - node).total_seconds())
    meta["lastFrameNumber"] = int(0.2 * (last.burst_stop_utc - node).total_seconds())
    return meta


def _geometry_files(geom_dir: Path, fbases: Sequence[str]) -> list[Path]:
    for fext in GEOMETRY_FEXTS:
        found = [geom_dir / f"{b}{fext}" for b in fbases if (geom_dir / f"{b}{fext}").is_file()]
        if found:
            return found
    return []


def _full_shape(fname: Path) -> tuple[int, int] | None:
    """(length, width) of ``<fname>.full`` from its ``.xml`` (or ``.vrt``) sidecar."""
    full_xml, full_vrt = Path(f"{fname}.full.xml"), Path(f"{fname}.full.vrt")
    if full_xml.is_file():
        info = read_isce_info(Path(f"{fname}.full"))
        return info.length, info.width
    if full_vrt.is_file():
        try:
            root = ET.parse(full_vrt).getroot()
            return int(root.get("rasterYSize", "")), int(root.get("rasterXSize", ""))
        except (ET.ParseError, ValueError) as exc:
            raise MetadataError(f"{full_vrt}: no raster size ({exc})") from exc
    return None


def multilook_numbers(geom_dir: Path) -> tuple[int, int]:
    """(ALOOKS, RLOOKS) from ``<f>.rdr.xml`` versus ``<f>.rdr.full.xml``, as MintPy finds them."""
    alooks, rlooks = 1, 1
    for fbase in ("hgt", "lat", "lon", "los", "shadowMask"):
        for fext in GEOMETRY_FEXTS:
            fname = geom_dir / f"{fbase}{fext}"
            if not fname.is_file():
                continue
            full = _full_shape(fname)
            if full is not None:
                mli = read_isce_info(fname)
                alooks = int(full[0] / mli.length)
                rlooks = int(full[1] / mli.width)
                break
    return alooks, rlooks


def _nonzero_rows(data: npt.NDArray[np.generic], buffer: int = 2) -> tuple[int, int]:
    if np.all(data):
        return 0 + buffer, -1 - buffer
    full_rows = np.where(np.sum(data != 0.0, axis=1) == data.shape[1])[0]
    if full_rows.size == 0:
        raise MetadataError("latitude/longitude raster has no row without zeros")
    return int(full_rows[0]) + buffer, int(full_rows[-1]) - buffer


def geometry_metadata(geom_dir: Path, meta: Mapping[str, object]) -> dict[str, object]:
    """``isce_utils.extract_geometry_metadata``: looks, pixel sizes, size, corners, incidence."""
    out = dict(meta)
    files = _geometry_files(geom_dir, ("hgt", "lat", "lon", "los"))
    if not files:
        raise MetadataError(
            f"no geometry file (hgt/lat/lon/los with {', '.join(GEOMETRY_FEXTS)}) in {geom_dir}; "
            "topsStack writes them in the merge step (merged/geom_reference)"
        )
    alooks, rlooks = multilook_numbers(geom_dir)
    out["ALOOKS"], out["RLOOKS"] = alooks, rlooks
    rgfact = float(out["rangeResolution"]) / float(out["rangePixelSize"])  # type: ignore[arg-type]
    azfact = float(out["azimuthResolution"]) / float(out["azimuthPixelSize"])  # type: ignore[arg-type]
    out["NCORRLOOKS"] = rlooks * alooks / (rgfact * azfact)
    out["rangePixelSize"] = float(out["rangePixelSize"]) * rlooks  # type: ignore[arg-type]
    out["azimuthPixelSize"] = float(out["azimuthPixelSize"]) * alooks  # type: ignore[arg-type]

    info = read_isce_info(files[0])
    out["LENGTH"], out["WIDTH"] = str(info.length), str(info.width)
    for path in files:
        name = path.name
        if "lat" in name or "lon" in name:
            data = read_isce_raster(path, band=1)
            r0, r1 = _nonzero_rows(data)
            prefix = "LAT" if "lat" in name else "LON"
            out[f"{prefix}_REF1"] = str(data[r0, 0])
            out[f"{prefix}_REF2"] = str(data[r0, -1])
            out[f"{prefix}_REF3"] = str(data[r1, 0])
            out[f"{prefix}_REF4"] = str(data[r1, -1])
        if "los" in name:
            inc = read_isce_raster(path, band=1).astype(np.float32, copy=True)
            inc[inc == 0.0] = np.nan
            out["CENTER_INCIDENCE_ANGLE"] = str(inc[inc.shape[0] // 2, inc.shape[1] // 2])
    return out


def standardize(meta: Mapping[str, object]) -> dict[str, str]:
    """Values as strings plus MintPy's standard key names (``readfile.standardize_metadata``)."""
    from mintpy.utils import readfile

    as_str = {k: str(v) for k, v in meta.items()}
    return dict(readfile.standardize_metadata(as_str))


def isce_stack_metadata(meta_file: Path, geom_dir: Path) -> dict[str, str]:
    """The common stack metadata ``isce_utils.extract_isce_metadata`` writes to ``data.rsc``."""
    meta = geometry_metadata(geom_dir, tops_metadata(meta_file))
    meta["PROCESSOR"] = "isce"
    meta.setdefault("ANTENNA_SIDE", "-1")
    result = standardize(meta)
    missing = [k for k in REQUIRED_KEYS if k not in result]
    if missing:  # pragma: no cover - guarded by the extraction above
        raise MetadataError(f"metadata from {meta_file} lacks {missing}")
    return result


def format_rsc(meta: Mapping[str, str]) -> str:
    """ROI_PAC ``.rsc`` text exactly as ``mintpy.utils.writefile.write_roipac_rsc`` writes it."""
    items = dict(meta)
    if "LENGTH" in items:
        items["FILE_LENGTH"] = items["LENGTH"]
    width = max([len(k) for k in items] + [2])
    return "".join(f"{k:<{width}}    {items[k]}\n" for k in sorted(items))


def read_rsc(path: Path) -> dict[str, str]:
    """Parse a ROI_PAC ``.rsc`` file (key, whitespace, value)."""
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            out[parts[0]] = parts[1].strip()
    return out


def write_data_rsc(meta_file: Path, geom_dir: Path) -> Path:
    """Write ``<dir of meta_file>/data.rsc`` so MintPy's ``prep_isce`` never imports ``isce``.

    MintPy reuses ``data.rsc`` only while it is newer than ``meta_file``, so the file's
    modification time is refreshed even when its content has not changed.
    """
    rsc = meta_file.parent / "data.rsc"
    meta = isce_stack_metadata(meta_file, geom_dir)
    if not atomic.write_text(rsc, format_rsc(meta), skip_unchanged=True):
        os.utime(rsc)
    if rsc.stat().st_mtime < meta_file.stat().st_mtime:
        # The XML carries a timestamp from the future (clock skew): follow it.
        xml_time = meta_file.stat().st_mtime_ns
        os.utime(rsc, ns=(xml_time, xml_time))
    return rsc


def find_meta_file(stack_dir: Path) -> Path:
    """The first ``reference/IW*.xml`` in sorted order, the file MintPy's load_data picks."""
    files = sorted((stack_dir / "reference").glob("IW*.xml"))
    if not files:
        raise MetadataError(
            f"no reference/IW*.xml in {stack_dir}; topsStack writes it in run_01 "
            "(unpack_topo_reference) — run the topsStack stage first"
        )
    return files[0]
