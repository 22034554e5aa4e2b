"""ISCE2 product metadata the simulator writes besides rasters.

- TOPS swath product XML (``reference/IW1.xml`` and friends), with the element and
  property structure ISCE2 2.6.5 writes (children sorted by name, as ISCE2 does).
- Virtual full-resolution mosaics (``hgt.rdr.full.vrt`` + ``.xml``), as
  ``mergeBursts.py`` writes with ``use_virtual_files``: burst files are stored on the
  multilooked grid, so each VRT source is stretched by the looks (nearest neighbour).
- Burst and swath layout of the multilooked grid.
"""

from __future__ import annotations

import itertools
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from insarflow import atomic
from insarflow.simulator.acquisition import (
    absolute_orbit,
    orbit_name,
    orbit_state_vectors,
)
from insarflow.simulator.scene import SceneSpec

ISCE_DATA_TYPE = {
    np.dtype("uint8"): ("BYTE", "Byte"),
    np.dtype("<i2"): ("SHORT", "Int16"),
    np.dtype("<i4"): ("INT", "Int32"),
    np.dtype("<f4"): ("FLOAT", "Float32"),
    np.dtype("<f8"): ("DOUBLE", "Float64"),
    np.dtype("<c8"): ("CFLOAT", "CFloat32"),
}
RANGE_BANDWIDTH = {1: 56500000.0, 2: 48300000.0, 3: 42789918.40322842}


# ----------------------------------------------------------------------------- layout


def burst_slices(spec: SceneSpec) -> list[slice]:
    """Rows of each burst on the multilooked grid (bursts tile the scene in azimuth)."""
    edges = np.linspace(0, spec.length, spec.bursts_per_swath + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def swath_slices(spec: SceneSpec, swaths: list[int]) -> dict[int, slice]:
    """Columns of each processed swath on the multilooked grid (swaths tile it in range)."""
    edges = np.linspace(0, spec.width, len(swaths) + 1).round().astype(int)
    return {
        s: slice(int(a), int(b))
        for s, a, b in zip(sorted(swaths), edges[:-1], edges[1:], strict=True)
    }


def overlap_slices(spec: SceneSpec) -> list[slice]:
    """Rows shared by bursts k and k+1 (a band around each burst boundary)."""
    bursts = burst_slices(spec)
    out = []
    for top, bottom in itertools.pairwise(bursts):
        half = max(1, min(top.stop - top.start, bottom.stop - bottom.start) // 8)
        out.append(slice(top.stop - half, bottom.start + half))
    return out


# ----------------------------------------------------------------------------- XML tree


@dataclass
class Prop:
    value: object
    doc: str | None = None


@dataclass
class Comp:
    factorymodule: str
    factoryname: str
    doc: str | None = None
    args: str | None = None
    children: dict[str, Prop | Comp] = field(default_factory=dict)


_DOCS = {
    "_factorname": "Factory Name used in the Trait Sequence",
    "_factory": "Flag - Factory/Parameter",
    "_mandatory": "Mandatory Field of the module used in Trait Sequence",
    "_modulename": "Module name used in Trait Sequence",
    "_private": "Private Field of the module used in Trait Sequence",
    "access_mode": "Image access mode.",
    "ascendingnodetime": "Ascending node time corresponding to the acquisition",
    "azimuthprocessingbandwidth": "Azimuth processing bandwidth in Hz",
    "azimuthsteeringrate": "Azimuth steering rate in radians per sec",
    "azimuthtimeinterval": "Azimuth time interval between lines in seconds",
    "azimuthwindowcoefficient": "Azimuth weight window coefficient",
    "azimuthwindowtype": "Azimuth weight window type",
    "burstnumber": "Burst number for bookkeeping",
    "burststartutc": "Actual sensing time corresponding to start of the burst",
    "burststoputc": "Actual sensing time corresponding to end of the burst",
    "byte_order": "Endianness of the image.",
    "data_type": "Image data type.",
    "delta": "Coordinate quantization.",
    "description": "Image description",
    "endingvalue": "Ending value of the coordinate.",
    "family": "Instance family name",
    "file_name": "Name of the image file.",
    "firstvalidline": "First valid line in the burst SLC",
    "firstvalidsample": "First valid sample in the burst SLC",
    "framenumber": "Frame number for bookkeeping",
    "image_type": "Image type used for displaying.",
    "imagingmode": "Imaging mode",
    "mission": "Mission name",
    "name": "Instance name",
    "number_bands": "Number of image bands.",
    "numberofbursts": "Number of bursts in the product",
    "numberoflines": "Length of the burst slc",
    "numberofsamples": "Width of the burst slc",
    "numberofvalidlines": "Number of valid lines in the burst SLC",
    "numberofvalidsamples": "Number of valid samples in the burst SLC",
    "orbit_source": "Orbit source",
    "orbitnumber": "Orbit number for bookkeeping",
    "order": "Polynomial order",
    "passdirection": "Ascending or descending",
    "polarization": "Polarization",
    "processingfacility": "Processing facility information",
    "processingsoftwareversion": "Processing system software version",
    "processingsystem": "Processing system information",
    "pulserepetitionfrequency": "Pulse repetition frequency in Hz",
    "radarwavelength": "Radar wavelength in m",
    "rangepixelsize": "Slant range pixel size in m",
    "rangeprocessingbandwidth": "Range processing bandwidth in Hz",
    "rangewindowcoefficient": "Range weight window coefficient",
    "rangewindowtype": "Range weight window type",
    "scheme": "Interleaving scheme of the image.",
    "sensingstart": "UTC time corresponding to first line of burst SLC",
    "sensingstop": "UTC time corresponding to last line of burst SLC",
    "size": "Coordinate size.",
    "spacecraftname": "Name of the space craft",
    "startingrange": "Slant range to first pixel in m",
    "startingvalue": "Starting value of the coordinate.",
    "swathnumber": "Swath number for bookkeeping",
    "terrainheight": "Average terrain height used for focusing",
    "tracknumber": "Track number for bookkeeping",
    "width": "Image width",
    "xmax": "Maximum range value",
    "xmin": "Minimum range value",
}
_NO_DOC = {"coeffs", "max_time", "mean", "min_time", "norm", "position", "time", "velocity"}


def P(value: object, doc: str | None = None) -> Prop:
    return Prop(value, doc)


def _emit(parent: ET.Element, name: str, node: Prop | Comp) -> None:
    if isinstance(node, Prop):
        el = ET.SubElement(parent, "property", name=name)
        ET.SubElement(el, "value").text = str(node.value)
        doc = node.doc if node.doc is not None else (None if name in _NO_DOC else _DOCS.get(name))
        if doc:
            ET.SubElement(el, "doc").text = doc
        return
    el = ET.SubElement(parent, "component", name=name)
    ET.SubElement(el, "factorymodule").text = node.factorymodule
    ET.SubElement(el, "factoryname").text = node.factoryname
    if node.args is not None:
        ET.SubElement(el, "args").text = node.args
    if node.doc is not None:
        ET.SubElement(el, "doc").text = node.doc
    for child_name in sorted(node.children):
        _emit(el, child_name, node.children[child_name])


def tree_to_xml(root_name: str, children: dict[str, Prop | Comp]) -> str:
    root = ET.Element(root_name)
    for name in sorted(children):
        _emit(root, name, children[name])
    ET.indent(root, space="    ")
    return ET.tostring(root, encoding="unicode") + "\n"


def _coordinate(size: int, doc: str) -> Comp:
    return Comp(
        "isceobj.Image",
        "createCoordinate",
        doc=doc,
        children={
            "delta": P(1),
            "endingvalue": P(size),
            "family": P("imagecoordinate"),
            "name": P("imagecoordinate_name"),
            "size": P(size),
            "startingvalue": P(0),
        },
    )


def _poly(args: str, doc: str, coeffs: list[float], mean: float) -> Comp:
    return Comp(
        "isceobj.Util.PolyFactory",
        "createPoly",
        doc=doc,
        args=args,
        children={
            "coeffs": P(coeffs),
            "family": P("poly1d"),
            "length": P(0, "Length of the image associated with the polynomial"),
            "mean": P(mean),
            "name": P("poly1d_name"),
            "norm": P(149896229.0),
            "order": P(len(coeffs) - 1),
            "width": P(0, "Width of the image associated with the polynomial"),
        },
    )


def _trait_seq(module: str, args: str, doc: str, items: dict[str, Comp]) -> Comp:
    children: dict[str, Prop | Comp] = {
        "_factorname": P("default"),
        "_factory": P(True),
        "_mandatory": P(False),
        "_modulename": P(module),
        "_private": P(True),
        "family": P("TraitSeq"),
        "name": P(sorted(items), "Holds the sequence of names"),
    }
    children.update(items)
    return Comp("iscesys.Component", "createTraitSeq", doc=doc, args=args, children=children)


# ----------------------------------------------------------------------------- TOPS product


@dataclass(frozen=True)
class BurstFile:
    """One burst raster as stored on disk (multilooked grid)."""

    path: Path
    width: int
    length: int


def burst_times(spec: SceneSpec, day: str, rows: slice) -> tuple[datetime, datetime, int]:
    """Sensing start/stop and full-resolution line count of the burst covering ``rows``."""
    dt = spec.azimuth_time_interval_s
    lines = (rows.stop - rows.start) * spec.azimuth_looks
    start = spec.first_line_time(day) + timedelta(seconds=rows.start * spec.azimuth_looks * dt)
    return start, start + timedelta(seconds=(lines - 1) * dt), lines


def swath_starting_range(spec: SceneSpec, cols: slice) -> float:
    return spec.starting_range_m + cols.start * spec.range_looks * spec.range_pixel_size_m


def tops_product_xml(
    spec: SceneSpec,
    day: str,
    swath: int,
    cols: slice,
    bursts: list[BurstFile],
    terrain_height: float,
) -> str:
    """The ``IW<n>.xml`` TOPSSwathSLCProduct of ``day`` whose bursts are ``bursts``.

    Timing and range numbers describe the full-resolution product (what ISCE2 would
    write); each burst's ``image`` describes the file on disk.
    """
    starting_range = swath_starting_range(spec, cols)
    full_samples = (cols.stop - cols.start) * spec.range_looks
    vectors = orbit_state_vectors(spec, day)
    state_vectors = {
        f"statevector{i + 1}": Comp(
            "isceobj.Orbit.Orbit",
            "StateVector",
            children={
                "family": P("_family"),
                "name": P("_family_name"),
                "position": P([round(float(v), 6) for v in pos]),
                "time": P(t),
                "velocity": P([round(float(v), 6) for v in vel]),
            },
        )
        for i, (t, pos, vel) in enumerate(vectors)
    }
    orbit = Comp(
        "isceobj.Orbit.Orbit",
        "createOrbit",
        doc="Orbit information",
        children={
            "family": P("orbit"),
            "max_time": P(vectors[-1][0]),
            "min_time": P(vectors[0][0]),
            "name": P("orbit_name"),
            "orbit_source": P(orbit_name(spec, day)),
            "state_vectors": _trait_seq(
                "StateVector", "('statevector',)", "Testing Trait Sequence", state_vectors
            ),
        },
    )
    burst_comps: dict[str, Comp] = {}
    rows_list = burst_slices(spec)
    for k, (bf, rows) in enumerate(zip(bursts, rows_list, strict=True), start=1):
        start, stop, lines = burst_times(spec, day, rows)
        duration = (stop - start).total_seconds()
        image = Comp(
            "isceobj.Image",
            "createSlcImage",
            doc="Image on disk",
            children={
                "access_mode": P("read"),
                "byte_order": P("l"),
                "coordinate1": _coordinate(bf.width, "First coordinate of a 2D image (width)."),
                "coordinate2": _coordinate(bf.length, "Second coordinate of a 2D image (length)."),
                "data_type": P("cfloat"),
                "description": P("['Single look complex image.']"),
                "family": P("slcimage"),
                "file_name": P(bf.path),
                "image_type": P("slc"),
                "length": P(bf.length, "Image length"),
                "name": P("slcimage_name"),
                "number_bands": P(1),
                "scheme": P("BIP"),
                "width": P(bf.width),
                "xmax": P(bf.width),
                "xmin": P(0),
            },
        )
        burst_comps[f"burst{k}"] = Comp(
            "isceobj.Sensor.TOPS.BurstSLC",
            "BurstSLC",
            children={
                "azimuthfmrate": _poly(
                    "('1', 'd')",
                    "Azimuth FM rate polynomial",
                    [-2320.493735512536, 450123.7667452181, -79164967.2970552],
                    starting_range,
                ),
                "azimuthprocessingbandwidth": P(327.0),
                "azimuthsteeringrate": P(0.027757171601738514),
                "azimuthtimeinterval": P(spec.azimuth_time_interval_s),
                "azimuthwindowcoefficient": P(0.7),
                "azimuthwindowtype": P("Hamming"),
                "burstnumber": P(k),
                "burststartutc": P(start + timedelta(seconds=0.37 * duration)),
                "burststoputc": P(start + timedelta(seconds=0.65 * duration)),
                "doppler": _poly(
                    "('1d',)",
                    "Doppler polynomial",
                    [-10.18311, 36122.93, -27399270.0],
                    starting_range,
                ),
                "family": P("burstslc"),
                "firstvalidline": P(0),
                "firstvalidsample": P(0),
                "framenumber": P(1),
                "image": image,
                "name": P("burstslc_name"),
                "numberoflines": P(lines),
                "numberofsamples": P(full_samples),
                "numberofvalidlines": P(lines),
                "numberofvalidsamples": P(full_samples),
                "orbit": orbit,
                "orbitnumber": P(absolute_orbit(spec, day)),
                "passdirection": P(spec.flight_direction),
                "polarization": P("VV"),
                "pulserepetitionfrequency": P(spec.prf_hz),
                "radarwavelength": P(spec.wavelength_m),
                "rangepixelsize": P(spec.range_pixel_size_m),
                "rangeprocessingbandwidth": P(RANGE_BANDWIDTH[swath]),
                "rangewindowcoefficient": P(0.75),
                "rangewindowtype": P("Hamming"),
                "sensingstart": P(start),
                "sensingstop": P(stop),
                "startingrange": P(starting_range),
                "swathnumber": P(swath),
                "terrainheight": P(terrain_height),
                "tracknumber": P(spec.relative_orbit),
            },
        )
    instance = Comp(
        "isceobj.Sensor.TOPS.TOPSSwathSLCProduct",
        "TOPSSwathSLCProduct",
        children={
            "ascendingnodetime": P(spec.first_line_time(day) - timedelta(seconds=2215.0)),
            "bursts": _trait_seq(
                "BurstSLC", "('burst',)", "Trait sequence of burst SLCs", burst_comps
            ),
            "family": P("topsswathslc"),
            "imagingmode": P("TOPS"),
            "mission": P(spec.platform),
            "name": P("topsswathslc_name"),
            "numberofbursts": P(len(burst_comps)),
            "processingfacility": P("insarflow simulator"),
            "processingsoftwareversion": P("003.91"),
            "processingsystem": P("Sentinel-1 IPF"),
            "spacecraftname": P("Sentinel-1"),
        },
    )
    return tree_to_xml(
        "productmanager_name",
        {"family": P("productmanager"), "instance": instance, "name": P("productmanager_name")},
    )


def write_tops_product(
    path: Path,
    spec: SceneSpec,
    day: str,
    swath: int,
    cols: slice,
    bursts: list[BurstFile],
    terrain_height: float,
) -> Path:
    atomic.write_text(
        path, tops_product_xml(spec, day, swath, cols, bursts, terrain_height), skip_unchanged=True
    )
    return path


def read_product_files(path: Path) -> list[Path]:
    """Burst file names listed in an ``IW<n>.xml`` product."""
    root = ET.parse(path).getroot()
    return [
        Path(el.findtext("value") or "")
        for el in root.iter("property")
        if el.get("name") == "file_name"
    ]


# ----------------------------------------------------------------------------- virtual mosaics


@dataclass(frozen=True)
class Tile:
    """One burst file placed in a full-resolution mosaic."""

    vrt: Path  # the burst raster's own .vrt
    width: int  # size on disk (multilooked grid)
    length: int
    x_off: int  # placement on the multilooked grid
    y_off: int


def write_virtual_full(
    path: Path,
    tiles: list[Tile],
    *,
    spec: SceneSpec,
    dtype: np.dtype[np.generic],
    bands: int,
    scheme: str,
    description: str | None = None,
    image_type: str | None = None,
    family: str = "image",
) -> None:
    """Write ``<path>.vrt`` and ``<path>.xml`` of a virtual full-resolution mosaic of ``tiles``."""
    rl, al = spec.range_looks, spec.azimuth_looks
    width, length = spec.full_width, spec.full_length
    isce_type, gdal_type = ISCE_DATA_TYPE[np.dtype(dtype)]
    lines = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{length}">']
    for band in range(1, bands + 1):
        lines.append(f'    <VRTRasterBand dataType="{gdal_type}" band="{band}">')
        lines.append("        <NoDataValue>0.0</NoDataValue>")
        for t in tiles:
            rel = _relpath(t.vrt, path.parent)
            lines += [
                "        <SimpleSource>",
                f'            <SourceFilename relativeToVRT="1">{rel}</SourceFilename>',
                f"            <SourceBand>{band}</SourceBand>",
                f'            <SourceProperties RasterXSize="{t.width}" RasterYSize="{t.length}" '
                f'DataType="{gdal_type}"/>',
                f'            <SrcRect xOff="0" yOff="0" xSize="{t.width}" ySize="{t.length}"/>',
                f'            <DstRect xOff="{t.x_off * rl}" yOff="{t.y_off * al}" '
                f'xSize="{t.width * rl}" ySize="{t.length * al}"/>',
                "        </SimpleSource>",
            ]
        lines.append("    </VRTRasterBand>")
    lines.append("</VRTDataset>")
    atomic.write_text(Path(f"{path}.vrt"), "\n".join(lines) + "\n", skip_unchanged=True)

    children: dict[str, Prop | Comp] = {
        "ISCE_VERSION": P("Release: 2.6.5, svn-, 20260630. Current: svn-."),
        "access_mode": P("read"),
        "byte_order": P("l"),
        "coordinate1": _coordinate(width, "First coordinate of a 2D image (width)."),
        "coordinate2": _coordinate(length, "Second coordinate of a 2D image (length)."),
        "data_type": P(isce_type),
        "extra_file_name": P(f"{path}.vrt", ""),
        "family": P(family),
        "file_name": P(path),
        "length": P(length, "Image length"),
        "name": P(f"{family}_name"),
        "number_bands": P(bands),
        "scheme": P(scheme),
        "width": P(width, "Image width"),
        "xmax": P(width),
        "xmin": P(0),
    }
    if description:
        children["description"] = P(description, "")
    if image_type:
        children["image_type"] = P(image_type)
    atomic.write_text(Path(f"{path}.xml"), tree_to_xml("imageFile", children), skip_unchanged=True)


def _relpath(target: Path, start: Path) -> str:
    return os.path.relpath(target, start)
