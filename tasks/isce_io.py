"""Read and write ISCE2 files: rasters (raw binary + ``.xml`` + ``.vrt`` sidecars) and the
topsStack config files that ``SentinelWrapper.py`` runs.

The sidecars follow what ISCE2 2.6.5 writes (see the real ones in
``fixtures/isce2_products``): an ``imageFile`` XML with width/length/bands/data
type/interleave, and a GDAL ``VRTRawRasterBand`` VRT relative to the raw file.
"""

from __future__ import annotations

import configparser
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from insarflow import atomic

Scheme = Literal["BIL", "BIP", "BSQ"]

_FUNCTION_SECTION = re.compile(r"Function-(\d+)")
_BPERP = re.compile(r"^Bperp \(average\):\s*(\S+)", re.MULTILINE)


def baseline_values(text: str) -> list[str]:
    """The ``Bperp (average)`` values of a topsStack baseline file (``baselines/*/*.txt``)."""
    return _BPERP.findall(text)


def is_finite_number(text: str) -> bool:
    """Whether ``text`` reads as a finite number (``nan``, ``inf`` or junk do not)."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


class IsceConfigError(ValueError):
    """A topsStack config file that cannot be read; the message names the file and the fix."""


@dataclass(frozen=True)
class ConfigFunction:
    """One ``[Function-N]`` section of a topsStack config file."""

    index: int
    name: str
    params: Mapping[str, str] = field(default_factory=dict, hash=False)


def read_isce_config(path: Path) -> tuple[ConfigFunction, ...]:
    """The ``[Function-N]`` sections of a topsStack config (``configs/config_*``), in order.

    The format is ISCE2's own (SentinelWrapper.py reads it with configparser, ``:`` as the
    delimiter, keys case-sensitive): each section's first key is the function to call, the
    rest are its parameters. ``[Common]`` holds nothing a function needs.
    """
    parser = configparser.ConfigParser(
        delimiters=(":",), comment_prefixes=("#",), interpolation=None, default_section=""
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep key case
    fix = "regenerate the configs with stackSentinel.py"
    try:
        parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    except configparser.Error as exc:
        raise IsceConfigError(f"{path}: {exc.message.strip()}; {fix}") from exc
    functions: list[ConfigFunction] = []
    for section in parser.sections():
        match = _FUNCTION_SECTION.fullmatch(section)
        if match is None:
            continue
        items = list(parser[section].items())
        if not items:
            raise IsceConfigError(f"{path}: section [{section}] has no function name line; {fix}")
        (name, _), params = items[0], dict(items[1:])
        functions.append(ConfigFunction(int(match.group(1)), name, params))
    return tuple(functions)


# ISCE data_type names <-> numpy dtypes <-> GDAL VRT data types.
_ISCE_TO_NUMPY = {
    "BYTE": np.dtype("uint8"),
    "SHORT": np.dtype("<i2"),
    "INT": np.dtype("<i4"),
    "FLOAT": np.dtype("<f4"),
    "DOUBLE": np.dtype("<f8"),
    "CFLOAT": np.dtype("<c8"),
}
_NUMPY_TO_ISCE = {v: k for k, v in _ISCE_TO_NUMPY.items()}
_NUMPY_TO_GDAL = {
    np.dtype("uint8"): "Byte",
    np.dtype("<i2"): "Int16",
    np.dtype("<i4"): "Int32",
    np.dtype("<f4"): "Float32",
    np.dtype("<f8"): "Float64",
    np.dtype("<c8"): "CFloat32",
}

ISCE_VERSION = "Release: 2.6.5, svn-, 20260630. Current: svn-."


@dataclass(frozen=True)
class IsceImageInfo:
    """Shape and layout of an ISCE raster, as its XML sidecar declares."""

    path: Path
    width: int
    length: int
    bands: int
    dtype: np.dtype[np.generic]
    scheme: Scheme

    @property
    def expected_bytes(self) -> int:
        return self.width * self.length * self.bands * self.dtype.itemsize


def _prop(parent: ET.Element, name: str, value: object, doc: str | None = None) -> None:
    prop = ET.SubElement(parent, "property", name=name)
    ET.SubElement(prop, "value").text = str(value)
    if doc:
        ET.SubElement(prop, "doc").text = doc


def _coordinate(parent: ET.Element, name: str, size: int, doc: str) -> None:
    comp = ET.SubElement(parent, "component", name=name)
    ET.SubElement(comp, "factorymodule").text = "isceobj.Image"
    ET.SubElement(comp, "factoryname").text = "createCoordinate"
    ET.SubElement(comp, "doc").text = doc
    _prop(comp, "delta", 1, "Coordinate quantization.")
    _prop(comp, "endingvalue", size, "Ending value of the coordinate.")
    _prop(comp, "family", "imagecoordinate", "Instance family name")
    _prop(comp, "name", "imagecoordinate_name", "Instance name")
    _prop(comp, "size", size, "Coordinate size.")
    _prop(comp, "startingvalue", 0, "Starting value of the coordinate.")


def _band_offsets(
    scheme: Scheme, width: int, length: int, bands: int, itemsize: int
) -> list[tuple[int, int, int]]:
    """(image offset, pixel offset, line offset) per band for a raw interleave."""
    if scheme == "BSQ":
        return [(b * width * length * itemsize, itemsize, width * itemsize) for b in range(bands)]
    if scheme == "BIL":
        return [(b * width * itemsize, itemsize, bands * width * itemsize) for b in range(bands)]
    return [(b * itemsize, bands * itemsize, bands * width * itemsize) for b in range(bands)]


def _interleave(data: npt.NDArray[np.generic], scheme: Scheme) -> npt.NDArray[np.generic]:
    """(bands, length, width) -> the on-disk order of ``scheme``."""
    if scheme == "BSQ":
        return data
    if scheme == "BIL":
        return np.ascontiguousarray(data.transpose(1, 0, 2))
    return np.ascontiguousarray(data.transpose(1, 2, 0))


def write_isce_raster(
    path: Path,
    data: npt.NDArray[np.generic],
    *,
    scheme: Scheme = "BIL",
    family: str = "image",
    image_type: str | None = None,
    description: str | None = None,
) -> IsceImageInfo:
    """Write ``data`` (length, width) or (bands, length, width) with ISCE2's sidecars.

    The raw file is written to a temporary name and renamed last, so a reader that
    checks the raw file's size against its XML never sees a partial raster as done.
    """
    arr = np.asarray(data)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim != 3:
        raise ValueError(f"{path}: expected a 2-D or 3-D array, got shape {arr.shape}")
    dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    if dtype not in _NUMPY_TO_ISCE:
        raise ValueError(f"{path}: ISCE2 has no data type for numpy {arr.dtype}")
    bands, length, width = arr.shape
    path.parent.mkdir(parents=True, exist_ok=True)

    root = ET.Element("imageFile")
    _prop(root, "ISCE_VERSION", ISCE_VERSION)
    _prop(root, "access_mode", "read", "Image access mode.")
    _prop(root, "byte_order", "l", "Endianness of the image.")
    _coordinate(root, "coordinate1", width, "First coordinate of a 2D image (width).")
    _coordinate(root, "coordinate2", length, "Second coordinate of a 2D image (length).")
    _prop(root, "data_type", _NUMPY_TO_ISCE[dtype], "Image data type.")
    if description:
        _prop(root, "description", description)
    _prop(root, "extra_file_name", f"{path}.vrt")
    _prop(root, "family", family, "Instance family name")
    _prop(root, "file_name", str(path), "Name of the image file.")
    if image_type:
        _prop(root, "image_type", image_type, "Image type used for displaying.")
    _prop(root, "length", length, "Image length")
    _prop(root, "name", f"{family}_name", "Instance name")
    _prop(root, "number_bands", bands, "Number of image bands.")
    _prop(root, "scheme", scheme, "Interleaving scheme of the image.")
    _prop(root, "width", width, "Image width")
    _prop(root, "xmax", width, "Maximum range value")
    _prop(root, "xmin", 0, "Minimum range value")
    ET.indent(root, space="    ")

    vrt = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(length))
    for band, (image_off, pixel_off, line_off) in enumerate(
        _band_offsets(scheme, width, length, bands, dtype.itemsize), start=1
    ):
        rb = ET.SubElement(
            vrt,
            "VRTRasterBand",
            dataType=_NUMPY_TO_GDAL[dtype],
            band=str(band),
            subClass="VRTRawRasterBand",
        )
        ET.SubElement(rb, "SourceFilename", relativeToVRT="1").text = path.name
        ET.SubElement(rb, "ByteOrder").text = "LSB"
        ET.SubElement(rb, "ImageOffset").text = str(image_off)
        ET.SubElement(rb, "PixelOffset").text = str(pixel_off)
        ET.SubElement(rb, "LineOffset").text = str(line_off)
    ET.indent(vrt, space="    ")

    with atomic.replacing(path) as tmp:  # the raster last: it is what marks the image complete
        _interleave(arr.astype(dtype, copy=False), scheme).tofile(tmp)
        ET.ElementTree(root).write(f"{path}.xml", encoding="unicode")
        ET.ElementTree(vrt).write(f"{path}.vrt", encoding="unicode")
    return IsceImageInfo(path, width, length, bands, dtype, scheme)


def read_isce_info(path: Path) -> IsceImageInfo:
    """Parse ``<path>.xml``; raise naming the file when it is missing or malformed."""
    xml_path = Path(f"{path}.xml")
    if not xml_path.is_file():
        raise FileNotFoundError(f"ISCE sidecar {xml_path} not found for raster {path}")
    try:
        root = ET.parse(xml_path).getroot()
        props = {
            p.get("name"): (p.findtext("value") or "").strip() for p in root.findall("property")
        }
        dtype = _ISCE_TO_NUMPY[props["data_type"].upper()]
        scheme = props.get("scheme", "BIP").upper()
        if scheme not in ("BIL", "BIP", "BSQ"):
            raise ValueError(f"unknown scheme {scheme!r}")
        return IsceImageInfo(
            path=path,
            width=int(props["width"]),
            length=int(props["length"]),
            bands=int(props.get("number_bands", "1")),
            dtype=dtype,  # type: ignore[arg-type]
            scheme=scheme,  # type: ignore[arg-type]
        )
    except (ET.ParseError, KeyError, ValueError) as exc:
        raise ValueError(f"malformed ISCE sidecar {xml_path}: {exc}") from exc


def is_complete(path: Path) -> bool:
    """True when the raster and its XML exist and the raw size matches the XML."""
    try:
        info = read_isce_info(path)
    except (FileNotFoundError, ValueError):
        return False
    return path.is_file() and path.stat().st_size == info.expected_bytes


def read_isce_raster(path: Path, band: int | None = None) -> npt.NDArray[np.generic]:
    """Read a raster as (bands, length, width), or (length, width) for one ``band`` (1-based)."""
    info = read_isce_info(path)
    size = path.stat().st_size
    if size != info.expected_bytes:
        raise ValueError(
            f"{path} has {size} bytes but its XML declares {info.expected_bytes} "
            f"({info.bands} x {info.length} x {info.width} {info.dtype}); the file is incomplete"
        )
    raw = np.fromfile(path, dtype=info.dtype)
    if info.scheme == "BSQ":
        cube = raw.reshape(info.bands, info.length, info.width)
    elif info.scheme == "BIL":
        cube = raw.reshape(info.length, info.bands, info.width).transpose(1, 0, 2)
    else:
        cube = raw.reshape(info.length, info.width, info.bands).transpose(2, 0, 1)
    if band is None:
        return cube
    return np.ascontiguousarray(cube[band - 1])


# ISCE2's topsStack saves each product twice: ``IW<n>.xml`` (what every later step reads) and a
# Python shelve beside it, ``IW<n>.xml.data`` (``.dat``/``.dir``/``.bak`` files when that
# Python's dbm is the dumb one, as in ISCE2's venv), that pickles the product object.
# The pickle holds the memory addresses (``id()``) its objects had in the writing process, and
# pickle's memo numbering follows which equal strings happened to be one object there: two runs
# of the same line write different bytes for the same data. Compare shelves by this instead.
SHELVE_SUFFIXES = (".xml.data", ".xml.data.dat", ".xml.data.dir", ".xml.data.bak")
_ADDRESS_MIN = 2**32  # integers this large in an ISCE2 product pickle are object addresses


def shelve_fingerprint(path: Path) -> str:
    """sha256 of the data pickled in an ISCE2 product shelve (``<xml>.data``, without suffix):
    opcodes and values, with memo bookkeeping resolved and object addresses left out."""
    import dbm
    import hashlib
    import pickletools

    digest = hashlib.sha256()
    with dbm.open(str(path), "r") as shelf:  # the format of the Python that wrote it
        for key in sorted(shelf.keys()):
            name = key.encode() if isinstance(key, str) else key
            digest.update(name + b"\0")
            memo: dict[object, object] = {}
            tokens: list[object] = []
            for op, arg, _ in pickletools.genops(shelf[key]):
                if op.name in ("FRAME", "PROTO", "STOP"):
                    continue
                if op.name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                    index = len(memo) if op.name == "MEMOIZE" else arg
                    last = tokens[-1] if tokens else None
                    # a memoized string is the string again; anything else the place it was built
                    memo[index] = (
                        last if isinstance(last, tuple) and last[0] == "str" else len(tokens)
                    )
                    continue
                if op.name in ("GET", "BINGET", "LONG_BINGET"):
                    found = memo[arg]
                    tokens.append(found if isinstance(found, tuple) else ("ref", found))
                    continue
                if isinstance(arg, str):
                    tokens.append(("str", arg))
                elif isinstance(arg, int) and abs(arg) >= _ADDRESS_MIN:
                    tokens.append((op.name, "<address>"))
                else:
                    tokens.append((op.name, repr(arg)))
            digest.update(repr(tokens).encode())
    return digest.hexdigest()


def product_digests(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under ``folder`` by relative path (first parts in ``skip`` left
    out); an ISCE2 product shelve counts once, by :func:`shelve_fingerprint`."""
    import hashlib

    out: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or path.is_symlink() or rel.parts[0] in skip:
            continue
        if path.name.endswith(SHELVE_SUFFIXES):
            if path.name.endswith((".xml.data", ".xml.data.dat")):  # one entry per shelve
                shelf = path if path.name.endswith(".data") else path.with_suffix("")
                out[str(rel)] = "shelve " + shelve_fingerprint(shelf)
            continue
        out[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out
