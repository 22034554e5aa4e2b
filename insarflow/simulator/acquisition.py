"""Synthetic inputs in the real formats: SAFE zips, precise orbit files and a DEM.

The SAFE zips hold only what ``stackSentinel.py`` reads while writing run files
(``manifest.safe`` and ``preview/map-overlay.kml``); orbit files are named like real
POEORB files and hold a few state vectors of the synthetic orbit; the DEM is the scene
topography on a lat/lon grid, named like ``dem.py`` output. The scene specification is
stored beside the zips as ``simulator_scene.json``.
"""

from __future__ import annotations

import io
import math
import xml.etree.ElementTree as ET
import zipfile
import zlib
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from insarflow import atomic
from insarflow.simulator.scene import (
    DATE_FORMAT,
    EARTH_RADIUS_M,
    SceneSpec,
    _geolocation,
    destination,
    satellite_state,
    topography_at,
)
from insarflow.tasks.isce_io import is_complete, write_isce_raster

SCENE_FILE = "simulator_scene.json"
FRAME_SECONDS = 27.0
SWATH_WIDTH_M = 250_000.0
MAX_DEM_SPAN_DEG = 4.0
# absolute orbit = ANX count; relative orbit = (absolute - offset) % 175 + 1
_ORBIT_OFFSET = {"S1A": 73, "S1B": 27, "S1C": 172}
_ORBIT_ANCHOR = (datetime(2025, 4, 6, 2, 20, 8), 58630)
_ORBITS_PER_DAY = 175 / 12


def absolute_orbit(spec: SceneSpec, day: str) -> int:
    """An absolute orbit number near the real one for ``day`` whose track is ``relative_orbit``."""
    when = spec.first_line_time(day)
    anchor_time, anchor_orbit = _ORBIT_ANCHOR
    approx = round(anchor_orbit + (when - anchor_time).total_seconds() / 86400 * _ORBITS_PER_DAY)
    offset = _ORBIT_OFFSET[spec.platform]
    current = (approx - offset) % 175 + 1
    shift = (spec.relative_orbit - current + 87) % 175 - 87
    return approx + shift


def frame_times(spec: SceneSpec, day: str) -> tuple[datetime, datetime]:
    """Start and stop time of the SAFE frame that contains the scene on ``day``."""
    start = spec.first_line_time(day) - timedelta(seconds=2.0)
    start = start.replace(microsecond=0)
    return start, start + timedelta(seconds=FRAME_SECONDS)


def safe_name(spec: SceneSpec, day: str) -> str:
    """Real-style SAFE zip name: ``S1A_IW_SLC__1SDV_<start>_<stop>_<orbit>_<take>_<crc>.zip``."""
    start, stop = frame_times(spec, day)
    orbit = absolute_orbit(spec, day)
    datatake = int(orbit * 8.113) & 0xFFFFFF
    stem = (
        f"{spec.platform}_IW_SLC__1SDV_{start:%Y%m%dT%H%M%S}_{stop:%Y%m%dT%H%M%S}_"
        f"{orbit:06d}_{datatake:06X}"
    )
    crc = zlib.crc32(f"{spec.seed}:{stem}".encode()) & 0xFFFF
    return f"{stem}_{crc:04X}.zip"


def orbit_name(spec: SceneSpec, day: str) -> str:
    """Real-style POEORB name valid from day-1 22:59:42 to day+1 00:59:42 around ``day``."""
    d = datetime.strptime(day, DATE_FORMAT)
    start = d - timedelta(days=1) + timedelta(hours=22, minutes=59, seconds=42)
    stop = start + timedelta(hours=26)
    created = d + timedelta(days=20, hours=8)
    return (
        f"{spec.platform}_OPER_AUX_POEORB_OPOD_{created:%Y%m%dT%H%M%S}_"
        f"V{start:%Y%m%dT%H%M%S}_{stop:%Y%m%dT%H%M%S}.EOF"
    )


def footprint(spec: SceneSpec) -> list[tuple[float, float]]:
    """(lon, lat) corners of the SAFE frame around the scene, in acquisition order."""
    h = math.radians(spec.heading_deg)
    along = (math.sin(h), math.cos(h))
    across = (math.cos(h), -math.sin(h))
    half_len = 0.5 * FRAME_SECONDS * spec.ground_speed
    half_wid = 0.5 * SWATH_WIDTH_M
    corners = []
    for a, c in (
        (-half_len, -half_wid),
        (-half_len, half_wid),
        (half_len, half_wid),
        (half_len, -half_wid),
    ):
        east = a * along[0] + c * across[0]
        north = a * along[1] + c * across[1]
        lat, lon = destination(spec.center_lat, spec.center_lon, east, north)
        corners.append((lon, lat))
    return corners


def _kml(spec: SceneSpec) -> str:
    coords = " ".join(f"{lon:.6f},{lat:.6f}" for lon, lat in footprint(spec))
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<kml xmlns:gx="http://www.google.com/kml/ext/2.2">
  <Document>
    <name>Sentinel-1 Map Overlay</name>
    <Folder>
      <name>Sentinel-1 Scene Overlay</name>
      <GroundOverlay>
        <name>Sentinel-1 Image Overlay</name>
        <Icon>
          <href>quick-look.png</href>
        </Icon>
        <gx:LatLonQuad>
          <coordinates>{coords}</coordinates>
        </gx:LatLonQuad>
      </GroundOverlay>
    </Folder>
  </Document>
</kml>
"""


def _manifest(spec: SceneSpec, day: str) -> str:
    start, stop = frame_times(spec, day)
    orbit = absolute_orbit(spec, day)
    coords = " ".join(f"{lat:.6f},{lon:.6f}" for lon, lat in footprint(spec))
    swaths = "\n".join(f"            <s1sarl1:swath>IW{s}</s1sarl1:swath>" for s in spec.swaths)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<xfdu:XFDU xmlns:xfdu="urn:ccsds:schema:xfdu:1"
  xmlns:safe="http://www.esa.int/safe/sentinel-1.0"
  xmlns:s1="http://www.esa.int/safe/sentinel-1.0/sentinel-1"
  xmlns:s1sarl1="http://www.esa.int/safe/sentinel-1.0/sentinel-1/sar/level-1"
  xmlns:gml="http://www.opengis.net/gml"
  version="esa/safe/sentinel-1.0/sentinel-1/sar/level-1/slc/standard/iwdp">
  <metadataSection>
    <metadataObject ID="platform" classification="DESCRIPTION" category="DMD">
      <metadataWrap mimeType="text/xml" vocabularyName="SAFE" textInfo="Platform Description">
        <xmlData>
          <safe:platform>
            <safe:nssdcIdentifier>2014-016A</safe:nssdcIdentifier>
            <safe:familyName>SENTINEL-1</safe:familyName>
            <safe:number>{spec.platform[-1]}</safe:number>
            <safe:instrument>
              <safe:familyName abbreviation="SAR">Synthetic Aperture Radar</safe:familyName>
              <safe:extension>
                <s1sarl1:instrumentMode>
                  <s1sarl1:mode>IW</s1sarl1:mode>
{swaths}
                </s1sarl1:instrumentMode>
              </safe:extension>
            </safe:instrument>
          </safe:platform>
        </xmlData>
      </metadataWrap>
    </metadataObject>
    <metadataObject ID="measurementOrbitReference" classification="DESCRIPTION" category="DMD">
      <metadataWrap mimeType="text/xml" vocabularyName="SAFE" textInfo="Orbit Reference">
        <xmlData>
          <safe:orbitReference>
            <safe:orbitNumber type="start">{orbit}</safe:orbitNumber>
            <safe:orbitNumber type="stop">{orbit}</safe:orbitNumber>
            <safe:relativeOrbitNumber type="start">{spec.relative_orbit}</safe:relativeOrbitNumber>
            <safe:relativeOrbitNumber type="stop">{spec.relative_orbit}</safe:relativeOrbitNumber>
            <safe:extension>
              <s1:orbitProperties>
                <s1:pass>{spec.flight_direction}</s1:pass>
              </s1:orbitProperties>
            </safe:extension>
          </safe:orbitReference>
        </xmlData>
      </metadataWrap>
    </metadataObject>
    <metadataObject ID="generalProductInformation" classification="DESCRIPTION" category="DMD">
      <metadataWrap mimeType="text/xml" vocabularyName="SAFE" textInfo="Product Information">
        <xmlData>
          <s1sarl1:standAloneProductInformation>
            <s1sarl1:missionDataTakeID>{int(orbit * 8.113) & 0xFFFFFF}</s1sarl1:missionDataTakeID>
            <s1sarl1:transmitterReceiverPolarisation>VV</s1sarl1:transmitterReceiverPolarisation>
            <s1sarl1:transmitterReceiverPolarisation>VH</s1sarl1:transmitterReceiverPolarisation>
            <s1sarl1:productClass>S</s1sarl1:productClass>
            <s1sarl1:productType>SLC</s1sarl1:productType>
          </s1sarl1:standAloneProductInformation>
        </xmlData>
      </metadataWrap>
    </metadataObject>
    <metadataObject ID="acquisitionPeriod" classification="DESCRIPTION" category="DMD">
      <metadataWrap mimeType="text/xml" vocabularyName="SAFE" textInfo="Acquisition Period">
        <xmlData>
          <safe:acquisitionPeriod>
            <safe:startTime>{start:%Y-%m-%dT%H:%M:%S.%f}</safe:startTime>
            <safe:stopTime>{stop:%Y-%m-%dT%H:%M:%S.%f}</safe:stopTime>
          </safe:acquisitionPeriod>
        </xmlData>
      </metadataWrap>
    </metadataObject>
    <metadataObject ID="measurementFrameSet" classification="DESCRIPTION" category="DMD">
      <metadataWrap mimeType="text/xml" vocabularyName="SAFE" textInfo="Frame Set">
        <xmlData>
          <safe:frameSet>
            <safe:frame>
              <safe:footPrint srsName="http://www.opengis.net/gml/srs/epsg.xml#4326">
                <gml:coordinates>{coords}</gml:coordinates>
              </safe:footPrint>
            </safe:frame>
          </safe:frameSet>
        </xmlData>
      </metadataWrap>
    </metadataObject>
  </metadataSection>
</xfdu:XFDU>
"""


def safe_zip_bytes(spec: SceneSpec, day: str) -> bytes:
    """The placeholder SAFE zip of ``day`` (deterministic bytes)."""
    folder = safe_name(spec, day).removesuffix(".zip") + ".SAFE"
    d = datetime.strptime(day, DATE_FORMAT)
    stamp = (d.year, d.month, d.day, 0, 0, 0)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in (
            (f"{folder}/", None),
            (f"{folder}/manifest.safe", _manifest(spec, day)),
            (f"{folder}/preview/", None),
            (f"{folder}/preview/map-overlay.kml", _kml(spec)),
        ):
            info = zipfile.ZipInfo(name, date_time=stamp)
            if text is None:
                info.external_attr = (0o40755 << 16) | 0x10
                zf.writestr(info, b"")
            else:
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, text.encode())
    return buf.getvalue()


def orbit_state_vectors(
    spec: SceneSpec, day: str, margin_s: float = 60.0, step_s: int = 10
) -> list[tuple[datetime, np.ndarray, np.ndarray]]:
    """State vectors (time, ECEF position, velocity) every ``step_s`` around the acquisition."""
    first = spec.first_line_time(day)
    last = first + timedelta(seconds=spec.full_length * spec.azimuth_time_interval_s)
    t = (first - timedelta(seconds=margin_s)).replace(microsecond=0)
    t -= timedelta(seconds=t.second % step_s)
    out = []
    while t <= last + timedelta(seconds=margin_s):
        pos, vel = satellite_state(spec, day, t)
        out.append((t, pos, vel))
        t += timedelta(seconds=step_s)
    return out


def orbit_file_text(spec: SceneSpec, day: str) -> str:
    """A minimal, valid Earth Explorer orbit file of the synthetic orbit on ``day``."""
    name = orbit_name(spec, day).removesuffix(".EOF")
    fields = name.split("_")
    start = datetime.strptime(fields[6].removeprefix("V"), "%Y%m%dT%H%M%S")
    stop = datetime.strptime(fields[7], "%Y%m%dT%H%M%S")
    created = datetime.strptime(fields[5], "%Y%m%dT%H%M%S")
    mission = {"S1A": "Sentinel-1A", "S1B": "Sentinel-1B", "S1C": "Sentinel-1C"}[spec.platform]
    orbit = absolute_orbit(spec, day)
    osvs = []
    for t, pos, vel in orbit_state_vectors(spec, day):
        tai = t + timedelta(seconds=37)
        osvs.append(
            f"""    <OSV>
      <TAI>TAI={tai:%Y-%m-%dT%H:%M:%S.%f}</TAI>
      <UTC>UTC={t:%Y-%m-%dT%H:%M:%S.%f}</UTC>
      <UT1>UT1={t:%Y-%m-%dT%H:%M:%S.%f}</UT1>
      <Absolute_Orbit>+{orbit:05d}</Absolute_Orbit>
      <X unit="m">{pos[0]:.6f}</X>
      <Y unit="m">{pos[1]:.6f}</Y>
      <Z unit="m">{pos[2]:.6f}</Z>
      <VX unit="m/s">{vel[0]:.6f}</VX>
      <VY unit="m/s">{vel[1]:.6f}</VY>
      <VZ unit="m/s">{vel[2]:.6f}</VZ>
      <Quality>NOMINAL</Quality>
    </OSV>"""
        )
    body = "\n".join(osvs)
    return f"""<?xml version="1.0" ?>
<Earth_Explorer_File>
  <Earth_Explorer_Header>
    <Fixed_Header>
      <File_Name>{name}</File_Name>
      <File_Description>Precise Orbit Ephemerides (POE) Orbit File</File_Description>
      <Notes></Notes>
      <Mission>{mission}</Mission>
      <File_Class>OPER</File_Class>
      <File_Type>AUX_POEORB</File_Type>
      <Validity_Period>
        <Validity_Start>UTC={start:%Y-%m-%dT%H:%M:%S}</Validity_Start>
        <Validity_Stop>UTC={stop:%Y-%m-%dT%H:%M:%S}</Validity_Stop>
      </Validity_Period>
      <File_Version>0001</File_Version>
      <Source>
        <System>OPOD</System>
        <Creator>OPOD</Creator>
        <Creator_Version>3.1.0</Creator_Version>
        <Creation_Date>UTC={created:%Y-%m-%dT%H:%M:%S}</Creation_Date>
      </Source>
    </Fixed_Header>
    <Variable_Header>
      <Ref_Frame>EARTH_FIXED</Ref_Frame>
      <Time_Reference>UTC</Time_Reference>
    </Variable_Header>
  </Earth_Explorer_Header>
<Data_Block type="xml">
  <List_of_OSVs count="{len(osvs)}">
{body}
  </List_of_OSVs>
</Data_Block>
</Earth_Explorer_File>
"""


# ----------------------------------------------------------------------------- DEM


def dem_bounds(spec: SceneSpec) -> tuple[int, int, int, int]:
    """Integer-degree S N W E of the DEM: the scene and ``dem_bbox``, rounded outwards.

    ``dem_bbox`` is left out when it lies far from the scene (the union would span more
    than ``MAX_DEM_SPAN_DEG``), so a scene placed elsewhere never gets a continental DEM.
    """
    _, _, lat, lon = _geolocation(spec)
    scene = (float(lat.min()), float(lat.max()), float(lon.min()), float(lon.max()))
    s, n, w, e = spec.dem_bbox
    union = (min(s, scene[0]), max(n, scene[1]), min(w, scene[2]), max(e, scene[3]))
    if union[1] - union[0] > MAX_DEM_SPAN_DEG or union[3] - union[2] > MAX_DEM_SPAN_DEG:
        union = scene
    return (
        math.floor(union[0]),
        math.ceil(union[1]),
        math.floor(union[2]),
        math.ceil(union[3]),
    )


def dem_name(spec: SceneSpec) -> str:
    """``dem.py``-style name, e.g. ``demLat_N34_N35_Lon_E116_E118.dem.wgs84``."""

    def lat(v: int) -> str:
        return f"{'N' if v >= 0 else 'S'}{abs(v):02d}"

    def lon(v: int) -> str:
        return f"{'E' if v >= 0 else 'W'}{abs(v):03d}"

    s, n, w, e = dem_bounds(spec)
    return f"demLat_{lat(s)}_{lat(n)}_Lon_{lon(w)}_{lon(e)}.dem.wgs84"


def write_dem(dem_dir: Path, spec: SceneSpec) -> Path:
    """Write the scene topography as an ISCE2 DEM (int16, geographic, with .xml and .vrt)."""
    path = dem_dir / dem_name(spec)
    s, n, w, e = dem_bounds(spec)
    step = spec.dem_spacing_arcsec / 3600.0
    rows = round((n - s) / step) + 1
    cols = round((e - w) / step) + 1
    lats = n - np.arange(rows) * step
    lons = w + np.arange(cols) * step
    north = np.radians(lats - spec.center_lat)[:, None] * EARTH_RADIUS_M
    east = (
        np.radians(lons - spec.center_lon)[None, :]
        * EARTH_RADIUS_M
        * math.cos(math.radians(spec.center_lat))
    )
    heights = topography_at(spec, east * np.ones_like(north), north * np.ones_like(east))
    write_isce_raster(
        path,
        np.round(heights).astype("<i2"),
        scheme="BIP",
        family="demimage",
        image_type="dem",
    )
    _georeference_dem(path, lon0=w, lat0=n, step=step)
    return path


def _georeference_dem(path: Path, *, lon0: float, lat0: float, step: float) -> None:
    """Put the geographic grid into the DEM sidecars the way ``dem.py`` does."""
    xml_path = Path(f"{path}.xml")
    root = ET.parse(xml_path).getroot()
    for comp_name, start, delta in (("coordinate1", lon0, step), ("coordinate2", lat0, -step)):
        comp = root.find(f"component[@name='{comp_name}']")
        assert comp is not None
        size = int(comp.findtext("property[@name='size']/value") or "0")
        values = {"startingvalue": start, "delta": delta, "endingvalue": start + size * delta}
        for prop in comp.findall("property"):
            if prop.get("name") in values:
                value = prop.find("value")
                assert value is not None
                value.text = repr(values[prop.get("name") or ""])
    ref = ET.SubElement(root, "property", name="reference")
    ET.SubElement(ref, "value").text = "WGS84"
    ET.SubElement(ref, "doc").text = "Geodetic datum"
    ET.indent(root, space="    ")
    atomic.write_text(xml_path, ET.tostring(root, encoding="unicode"), skip_unchanged=True)

    vrt_path = Path(f"{path}.vrt")
    vrt = ET.parse(vrt_path).getroot()
    srs = ET.Element("SRS")
    srs.text = "EPSG:4326"
    geo = ET.Element("GeoTransform")
    geo.text = f"{lon0 - step / 2!r}, {step!r}, 0.0, {lat0 + step / 2!r}, 0.0, {-step!r}"
    vrt.insert(0, geo)
    vrt.insert(0, srs)
    ET.indent(vrt, space="    ")
    atomic.write_text(vrt_path, ET.tostring(vrt, encoding="unicode"), skip_unchanged=True)


# ----------------------------------------------------------------------------- entry point


def make_synthetic_acquisitions(
    slc_dir: Path, orbit_dir: Path, dem_dir: Path, spec: SceneSpec
) -> list[Path]:
    """Write SAFE zips, orbit files, the DEM and ``simulator_scene.json`` for ``spec``.

    Idempotent: files that already hold the right bytes are left alone. Returns the SAFE
    zips in date order.
    """
    for d in (slc_dir, orbit_dir, dem_dir):
        d.mkdir(parents=True, exist_ok=True)
    zips = []
    for day in spec.dates:
        path = slc_dir / safe_name(spec, day)
        atomic.write_bytes(path, safe_zip_bytes(spec, day), skip_unchanged=True)
        zips.append(path)
        atomic.write_text(
            orbit_dir / orbit_name(spec, day), orbit_file_text(spec, day), skip_unchanged=True
        )
    scene_file = slc_dir / SCENE_FILE
    same_spec = scene_file.is_file() and scene_file.read_text() == spec.to_json()
    dem = dem_dir / dem_name(spec)
    if not (same_spec and is_complete(dem) and Path(f"{dem}.vrt").is_file()):
        write_dem(dem_dir, spec)
    atomic.write_text(scene_file, spec.to_json(), skip_unchanged=True)
    return zips
