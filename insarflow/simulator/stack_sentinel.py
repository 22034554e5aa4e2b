"""A stand-in for ISCE2's ``stackSentinel.py``: same arguments, same run files and configs.

It writes ``SAFE_files.txt`` into the current directory, ``run_files/run_NN_<step>`` and
``configs/config_<...>`` under the work directory exactly as ISCE2 2.6.5 does (file names,
numbering, line shapes, config sections and keys), refuses an existing ``run_files/``,
and switches to update mode when ``coreg_secondarys/`` exists. Like the real one it reads
only SAFE names, ``preview/map-overlay.kml`` and orbit file names; in addition it copies the
synthetic scene (``simulator_scene.json`` beside the SAFE zips) to
``<work>/simulator/scene.json`` and writes the scene truth to ``<work>/simulator/truth.h5``.
"""

from __future__ import annotations

import argparse
import os
import sys
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from insarflow import atomic
from insarflow.constants import GEOMETRY_LAYERS
from insarflow.simulator.acquisition import SCENE_FILE
from insarflow.simulator.scene import SceneSpec, make_truth, write_truth
from insarflow.tasks.topsstack import steps

NO_MCF = "False"
DEFO_MAX = "2"
HASH26 = "#" * 26
HASH35 = "#" * 35
_MULTILOOK_TOOL = {
    "lat": "gdal",
    "lon": "gdal",
    "los": "gdal",
    "hgt": "gdal",
    "shadowMask": "isce",
    "incLocal": "gdal",
}
_NO_DATA = {"lat": "0", "lon": "0", "los": "0", "hgt": None, "shadowMask": None, "incLocal": "0"}


class StackSentinelError(RuntimeError):
    """A condition under which the real stackSentinel.py stops too."""


def create_parser() -> argparse.ArgumentParser:
    """The argument parser of ISCE2 2.6.5 ``stackSentinel.py`` (same options and defaults)."""
    p = argparse.ArgumentParser(
        prog="stackSentinel.py",
        description="Preparing the directory structure and config files for stack processing "
        "of Sentinel data (insarflow simulator)",
    )
    p.add_argument("-s", "--slc_directory", dest="slc_dirname", type=str, required=True)
    p.add_argument("-o", "--orbit_directory", dest="orbit_dirname", type=str, required=True)
    p.add_argument("-a", "--aux_directory", dest="aux_dirname", type=str, required=True)
    p.add_argument("-w", "--working_directory", dest="work_dir", type=str, default="./")
    p.add_argument("-d", "--dem", dest="dem", type=str, required=True)
    p.add_argument("-m", "--reference_date", dest="reference_date", type=str, default=None)
    p.add_argument("-c", "--num_connections", dest="num_connections", type=str, default="1")
    p.add_argument("-n", "--swath_num", dest="swath_num", type=str, default="1 2 3")
    p.add_argument("-b", "--bbox", dest="bbox", type=str, default=None)
    p.add_argument("-x", "--exclude_dates", dest="exclude_dates", type=str, default=None)
    p.add_argument("-i", "--include_dates", dest="include_dates", type=str, default=None)
    p.add_argument("--start_date", dest="startDate", type=str, default=None)
    p.add_argument("--stop_date", dest="stopDate", type=str, default=None)
    p.add_argument("-z", "--azimuth_looks", dest="azimuthLooks", type=str, default="3")
    p.add_argument("-r", "--range_looks", dest="rangeLooks", type=str, default="9")
    p.add_argument("-f", "--filter_strength", dest="filtStrength", type=str, default="0.5")
    p.add_argument("--snr_misreg_threshold", dest="snrThreshold", type=str, default="10")
    p.add_argument("-p", "--polarization", dest="polarization", type=str, default="vv")
    p.add_argument(
        "-C",
        "--coregistration",
        dest="coregistration",
        type=str,
        default="NESD",
        choices=["geometry", "NESD"],
    )
    p.add_argument(
        "-O", "--num_overlap_connections", dest="num_overlap_connections", type=str, default="3"
    )
    p.add_argument(
        "-e", "--esd_coherence_threshold", dest="esdCoherenceThreshold", type=str, default="0.85"
    )
    p.add_argument(
        "-W",
        "--workflow",
        dest="workflow",
        type=str,
        default="interferogram",
        choices=["slc", "correlation", "interferogram", "offset"],
    )
    p.add_argument(
        "-u",
        "--unw_method",
        dest="unwMethod",
        type=str,
        default="snaphu",
        choices=["icu", "snaphu"],
    )
    p.add_argument("-rmFilter", "--rmFilter", dest="rmFilter", action="store_true", default=False)
    p.add_argument("--param_ion", dest="param_ion", type=str, default=None)
    p.add_argument("--num_connections_ion", dest="num_connections_ion", type=str, default="3")
    p.add_argument("-useGPU", "--useGPU", dest="useGPU", action="store_true", default=False)
    p.add_argument("--num_proc", "--num_process", dest="numProcess", type=int, default=1)
    p.add_argument(
        "--num_proc4topo", "--num_process4topo", dest="numProcess4topo", type=int, default=1
    )
    p.add_argument("-t", "--text_cmd", dest="text_cmd", type=str, default="")
    p.add_argument(
        "-V",
        "--virtual_merge",
        dest="virtualMerge",
        type=str,
        default=None,
        choices=["True", "False"],
    )
    return p


def _abspath(path: str) -> str:
    return os.path.abspath(path)  # noqa: PTH100 - same normalisation as ISCE2


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    inps = create_parser().parse_args(list(argv))
    for key in ("slc_dirname", "orbit_dirname", "aux_dirname", "work_dir", "dem"):
        setattr(inps, key, _abspath(getattr(inps, key)))
    if any(a in argv for a in ("--num_proc", "--num_process")) and all(
        a not in argv for a in ("--num_proc4topo", "--num_process4topo")
    ):
        inps.numProcess4topo = inps.numProcess
    return inps


# ----------------------------------------------------------------------------- SAFE files


@dataclass
class Safe:
    """One acquisition date (one or more SAFE zips)."""

    files: list[str]
    platform: str
    date: str
    start: datetime
    stop: datetime
    orbit: str = ""
    orbit_type: str = "precise"
    snwe: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    @property
    def safe_file(self) -> str:
        return " ".join(self.files)


def safe_fields(path: str) -> tuple[str, datetime, datetime]:
    """Platform, start and stop time from a SAFE name."""
    fields = Path(path).name.split("_")
    try:
        start = datetime.strptime(fields[5], "%Y%m%dT%H%M%S")
        stop = datetime.strptime(fields[6], "%Y%m%dT%H%M%S")
    except (IndexError, ValueError):
        raise StackSentinelError(
            f"{path} is not named like a Sentinel-1 SAFE (S1A_IW_SLC__1SDV_<start>_<stop>_...)"
        ) from None
    return fields[0], start, stop


def read_kml_quad(safe: str) -> list[tuple[float, float]]:
    """(lon, lat) corners from ``preview/map-overlay.kml`` inside a SAFE zip or folder."""
    try:
        if safe.endswith(".zip"):
            with zipfile.ZipFile(safe) as zf:
                name = next(n for n in zf.namelist() if n.endswith("preview/map-overlay.kml"))
                text = zf.read(name).decode()
        else:
            text = (Path(safe) / "preview" / "map-overlay.kml").read_text()
    except (OSError, zipfile.BadZipFile, StopIteration) as exc:
        raise StackSentinelError(f"cannot read preview/map-overlay.kml of {safe}: {exc}") from exc
    root = ET.fromstring(text.replace("gx:", "gx"))
    coords = next(el.text for el in root.iter() if el.tag.endswith("coordinates") and el.text)
    out = []
    for pair in coords.split():
        lon, lat = pair.split(",")[:2]
        out.append((float(lon), float(lat)))
    return out


def find_orbit(safe: Safe, orbit_dir: str, margin_s: float = 60.0) -> str | None:
    """An orbit file in ``orbit_dir`` valid over the acquisition (ISCE2's name-based match)."""
    margin = timedelta(seconds=margin_s)
    candidates = sorted(Path(orbit_dir).glob(f"{safe.platform}*.EOF")) or sorted(
        Path(orbit_dir).glob(f"*/{safe.platform}*.EOF")
    )
    for path in candidates:
        fields = path.name.split("_")
        try:
            start = datetime.strptime(fields[6].replace("V", ""), "%Y%m%dT%H%M%S") + margin
            stop = datetime.strptime(fields[7].replace(".EOF", ""), "%Y%m%dT%H%M%S") - margin
        except (IndexError, ValueError):
            continue
        if safe.start >= start and safe.stop < stop:
            return str(path)
    return None


def get_dates(inps: argparse.Namespace) -> tuple[list[str], str, list[str], dict[str, Safe]]:
    """SAFE files -> dates, reference date, secondary dates and one Safe per date."""
    bbox = [float(v) for v in inps.bbox.split()] if inps.bbox is not None else None
    exclude = inps.exclude_dates.split(",") if inps.exclude_dates is not None else []
    include = inps.include_dates.split(",") if inps.include_dates is not None else []

    slc = Path(inps.slc_dirname)
    if slc.is_file():
        print("reading SAFE files from: " + inps.slc_dirname)
        safe_files = [line.strip() for line in slc.read_text().splitlines()]
    else:
        safe_files = sorted(str(p) for p in slc.glob("S1*_IW_SLC*zip")) or sorted(
            str(p) for p in slc.glob("S1*_IW_SLC*SAFE")
        )
    if not safe_files:
        raise StackSentinelError(f"No SAFE file found in {inps.slc_dirname}")
    if len(safe_files) == 1:
        raise StackSentinelError("At least two SAFE file is required. Only one SAFE file found.")
    print("Number of SAFE files found: " + str(len(safe_files)))

    start_limit = (
        datetime.strptime(inps.startDate, "%Y-%m-%d") if inps.startDate else datetime(1958, 1, 31)
    )
    stop_limit = (
        datetime.strptime(inps.stopDate, "%Y-%m-%d") if inps.stopDate else datetime(2158, 1, 31)
    )

    bbox_poly = None
    if bbox is not None:
        from shapely.geometry import Polygon

        s, n, w, e = bbox
        bbox_poly = Polygon([(w, s), (e, s), (e, n), (w, n)])

    safe_dict: dict[str, Safe] = {}
    used: list[str] = []
    for path in safe_files:
        platform, start, stop = safe_fields(path)
        day = start.strftime("%Y%m%d")
        if start < start_limit or start > stop_limit:
            exclude.append(day)
            continue
        obj = Safe([path], platform, day, start, stop)
        orbit = find_orbit(obj, inps.orbit_dirname)
        if orbit is None:
            raise StackSentinelError(
                f"orbit for {day} was not found in {inps.orbit_dirname}; the simulator cannot "
                "download orbits: put a precise orbit file covering the date there"
            )
        obj.orbit = orbit
        reject = False
        if day not in exclude and bbox_poly is not None:
            from shapely.geometry import Polygon

            reject = not Polygon(read_kml_quad(path)).intersects(bbox_poly)
        if not reject:
            if day not in safe_dict and day not in exclude:
                safe_dict[day] = obj
            elif day not in exclude:
                safe_dict[day].files.append(path)
            used.append(path)
    Path("SAFE_files.txt").write_text("".join(p + "\n" for p in used))
    print("Number of SAFE files to be used (cover BBOX): " + str(len(used)))

    dates = sorted(safe_dict)
    print("*****************************************")
    print("Number of dates : " + str(len(dates)))
    print("List of dates : ")
    print(dates)
    print("date      south      north")
    covering: dict[str, Safe] = {}
    forced: dict[str, Safe] = {}
    for day in dates:
        lons, lats = zip(
            *(pt for f in safe_dict[day].files for pt in read_kml_quad(f)), strict=True
        )
        safe_dict[day].snwe = (min(lats), max(lats), min(lons), max(lons))
        print(day, min(lats), max(lats))
        if bbox is not None:
            if safe_dict[day].snwe[0] <= bbox[0] and safe_dict[day].snwe[1] >= bbox[1]:
                covering[day] = safe_dict[day]
            elif day in include:
                forced[day] = safe_dict[day]
    print("*****************************************")
    print("All dates (" + str(len(dates)) + ")")
    print(dates)
    print("")
    if bbox is not None:
        safe_dict = {**covering, **forced}
        dates = sorted(safe_dict)
        print("dates covering the bbox (" + str(len(covering)) + ")")
        print(sorted(covering))
        print("")

    if inps.reference_date is None:
        if not dates:
            raise StackSentinelError(
                "No acquisition forfills the temporal range and bbox requirement."
            )
        inps.reference_date = dates[0]
        print("The reference date was not chosen. The first date is considered as reference date.")
    if inps.reference_date not in safe_dict:
        raise StackSentinelError(
            f"reference date {inps.reference_date} (-m) is not among the dates {dates}; pick one"
        )
    print("")
    print("All SLCs will be coregistered to : " + inps.reference_date)
    secondaries = sorted(d for d in safe_dict if d != inps.reference_date)
    print("secondary dates :")
    print(secondaries)
    print("")
    return dates, inps.reference_date, secondaries, safe_dict


def select_neighbor_pairs(
    dates: list[str],
    reference: str,
    secondaries: list[str],
    num_connections: str,
    update: bool = False,
) -> list[tuple[str, str]]:
    """Each date paired with its next ``num_connections`` dates (as ISCE2 selects them)."""
    if update:
        print("\nUpdating an existing stack ...\n")
        dates = sorted([*secondaries, reference])[1:]
    n = len(dates)
    conn = n - 1 if num_connections == "all" else int(num_connections)
    pairs = [
        (dates[i], dates[j]) for i in range(n - 1) for j in range(i + 1, i + conn + 1) if j < n
    ]
    print(f"selecting pairs with {conn} nearest neighbor connections: {len(pairs)}")
    return pairs


def check_current_status(
    inps: argparse.Namespace,
) -> tuple[list[str], str, list[str], dict[str, Safe], bool]:
    """Dates to process; update mode (new dates and the last few) if coreg_secondarys/ exists."""
    dates, reference, secondaries, safe_dict = get_dates(inps)
    coreg_dir = Path(inps.work_dir) / "coreg_secondarys"
    if not coreg_dir.exists():
        print("No existing stack was identified. A new stack will be generated.")
        return dates, reference, secondaries, safe_dict, False

    coreg = sorted(p.name for p in coreg_dir.glob("[0-9]???[0-9]?[0-9]?"))
    if coreg:
        print("%" * 30)
        print("\nAn existing stack with following coregistered SLCs was found:")
        print(coreg)
        print("\n" + "%" * 30)
    new = sorted(set(secondaries) - set(coreg))
    if not new:
        print("Warning:")
        print(f"The stack already exists in: {coreg_dir}.")
        print("No new acquisition found to update the stack.")
        raise StackSentinelError(
            f"the stack in {coreg_dir} has no new acquisition to add; nothing to update"
        )
    print("%" * 30)
    print("\nNew acquisitions was found: ")
    print(new)
    print("\n" + "%" * 30)
    if inps.coregistration in ("NESD", "nesd"):
        n_reprocess = min(2 * int(inps.num_overlap_connections), len(secondaries))
    else:
        n_reprocess = min(int(inps.num_connections), len(secondaries))
    latest = coreg[-n_reprocess:] if n_reprocess else []
    if len(set(secondaries) & set(latest)) < n_reprocess:
        raise StackSentinelError(
            f"The original SAFE files for latest {n_reprocess} coregistered SLCs is needed"
        )
    print(f"Last {n_reprocess} coregistred SLCs to be updated: ", latest)
    secondaries = sorted(latest + new)
    dates = sorted([*secondaries, reference])
    print("acquisitions used in this update: ")
    print(dates)
    print("stack reference:")
    print(reference)
    print("secondary acquisitions to be processed: ")
    print(secondaries)
    return dates, reference, secondaries, {d: safe_dict[d] for d in dates}, True


# ----------------------------------------------------------------------------- ion parameters


@dataclass
class IonParams:
    """The user ionosphere parameters of ISCE2's ion_param.txt (defaults as topsApp)."""

    do_ion: bool = False
    consider_burst_properties: bool = False
    filtering_winsize_max: int = 200
    filtering_winsize_min: int = 100
    masked_areas: list[list[int]] | None = None
    azimuth_looks: int = 50
    range_looks: int = 200
    azimuth_looks0: int = 10
    range_looks0: int = 40

    @classmethod
    def read(cls, path: str) -> IonParams:
        obj = cls()
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as exc:
            raise StackSentinelError(
                f"cannot read ionosphere parameter file {path}: {exc}"
            ) from exc
        keys: dict[str, tuple[str, Callable[[str], object]]] = {
            "do ionosphere correction": ("do_ion", _bool),
            "consider burst properties in ionosphere computation": (
                "consider_burst_properties",
                _bool,
            ),
            "maximum window size for filtering ionosphere phase": ("filtering_winsize_max", int),
            "minimum window size for filtering ionosphere phase": ("filtering_winsize_min", int),
            "total number of azimuth looks in the ionosphere processing": ("azimuth_looks", int),
            "total number of range looks in the ionosphere processing": ("range_looks", int),
            "number of azimuth looks at first stage for ionosphere phase unwrapping": (
                "azimuth_looks0",
                int,
            ),
            "number of range looks at first stage for ionosphere phase unwrapping": (
                "range_looks0",
                int,
            ),
        }
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, _, value = line.partition(":")
            name, value = name.strip(), value.strip()
            if name in keys:
                attr, conv = keys[name]
                setattr(obj, attr, conv(value))
            elif (
                name == "areas masked out in ionospheric phase estimation"
                and value.capitalize() != "None"
            ):
                nums = [int(v) for v in value.replace("[", "").replace("]", "").split(",")]
                if len(nums) % 4:
                    raise StackSentinelError("there must be four elements for each area.")
                obj.masked_areas = [nums[i : i + 4] for i in range(0, len(nums), 4)]
        return obj


def _bool(value: str) -> bool:
    return value.strip().capitalize() == "True"


def select_ion_pairs(dates: list[str], num_connections: str) -> list[tuple[str, str]]:
    """Ionosphere pairs; synthetic dates share their swath starting ranges (one group)."""
    n = len(dates)
    conn = n - 1 if num_connections == "all" else int(num_connections)
    return [(dates[i], dates[j]) for i in range(n - 1) for j in range(i + 1, i + conn + 1) if j < n]


# ----------------------------------------------------------------------------- writers


@dataclass
class Config:
    """A config file being written, line by line as ISCE2's ``config`` class does."""

    path: str
    lines: list[str] = field(default_factory=lambda: ["[Common]", HASH26])

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def write(self) -> None:
        atomic.write_text(
            Path(self.path), "".join(line + "\n" for line in self.lines), skip_unchanged=True
        )


class Writer:
    """Writes run files and configs for one stackSentinel invocation."""

    def __init__(self, inps: argparse.Namespace, safe_dict: dict[str, Safe]) -> None:
        self.inps = inps
        self.safe_dict = safe_dict
        self.work = inps.work_dir
        self.config_dir = f"{self.work}/configs"
        self.run_dir = f"{self.work}/run_files"
        self.step = 0
        self.run_lines: list[str] = []
        self.run_name = ""

    # -- run files
    def start_run(self, name: str) -> None:
        self.step += 1
        self.run_name = f"run_{self.step:02d}_{name}"
        self.run_lines = []
        Path(self.run_dir).mkdir(parents=True, exist_ok=True)
        Path(self.config_dir).mkdir(parents=True, exist_ok=True)
        print("writing ", f"{self.run_dir}/{self.run_name}")

    def finish_run(self) -> None:
        atomic.write_text(
            Path(f"{self.run_dir}/{self.run_name}"), "".join(self.run_lines), skip_unchanged=True
        )

    def command(self, text: str) -> None:
        self.run_lines.append(self.inps.text_cmd + text + "\n")

    def wrapper(self, config: Config, count: int, parallel: bool) -> int:
        """Write the config and its SentinelWrapper line; ``&``/``wait`` as ``--num_proc`` asks."""
        config.write()
        nproc = self.inps.numProcess if parallel else 1
        if nproc == 1:
            self.command("SentinelWrapper.py -c " + config.path)
            return count
        self.command("SentinelWrapper.py -c " + config.path + " &")
        if count == nproc:
            self.run_lines.append("wait\n\n")
            return 0
        return count

    def config(self, name: str) -> Config:
        return Config(f"{self.config_dir}/{name}")

    # -- config sections
    def sentinel1_tops(self, c: Config, func: str, safe: Safe, outdir: str) -> None:
        i = self.inps
        c.add(
            HASH26,
            func,
            "Sentinel1_TOPS : ",
            "dirname : " + safe.safe_file,
            "swaths : " + i.swath_num,
        )
        if safe.orbit_type == "precise":
            c.add("orbitdir : " + i.orbit_dirname)
        else:
            c.add("orbit : " + safe.orbit)
        c.add("outdir : " + outdir, "auxdir : " + i.aux_dirname)
        if i.bbox is not None:
            c.add("bbox : " + i.bbox)
        c.add("pol : " + i.polarization, HASH26)

    def topo(self, c: Config, func: str, outdir: str, geom_dir: str) -> None:
        c.add(
            HASH26,
            "#Call topo to produce reference geometry files",
            func,
            "topo : ",
            "reference : " + outdir,
            "dem : " + self.inps.dem,
            "geom_referenceDir : " + geom_dir,
            "numProcess : " + str(self.inps.numProcess4topo),
            HASH26,
        )

    def geo2rdr(
        self, c: Config, func: str, secondary: str, overlap: str, misreg: tuple[str, str] | None
    ) -> None:
        w = self.work
        c.add(
            HASH26,
            func,
            "geo2rdr :",
            f"secondary : {w}/secondarys/{secondary}",
            f"reference : {w}/reference",
            f"geom_referenceDir : {w}/geom_reference",
            f"coregSLCdir : {w}/coreg_secondarys/{secondary}",
            "overlap : " + overlap,
            "useGPU : True " if self.inps.useGPU else "useGPU : False",
        )
        if misreg:
            c.add("azimuth_misreg : " + misreg[0], "range_misreg : " + misreg[1])

    def resamp(
        self, c: Config, func: str, secondary: str, overlap: str, misreg: tuple[str, str] | None
    ) -> None:
        w = self.work
        c.add(
            HASH26,
            func,
            "resamp_withCarrier : ",
            f"secondary : {w}/secondarys/{secondary}",
            f"reference : {w}/reference",
            f"coregdir : {w}/coreg_secondarys/{secondary}",
            "overlap : " + overlap,
        )
        if misreg:
            c.add("azimuth_misreg : " + misreg[0], "range_misreg : " + misreg[1])

    def generate_igram(
        self, c: Config, func: str, ref: str, sec: str, ifg: str, prefix: str, overlap: str
    ) -> None:
        c.add(
            HASH35,
            func,
            "generateIgram : ",
            "reference : " + ref,
            "secondary : " + sec,
            "interferogram : " + ifg,
            "flatten : False",
            "interferogram_prefix : " + prefix,
            "overlap : " + overlap,
            HASH35,
        )

    def merge_burst(
        self,
        c: Config,
        *,
        reference: str,
        dirname: str,
        pattern: str,
        outfile: str,
        aligned: str,
        valid_only: str,
        virtual: str,
        multilook: str,
        tool: str | None = None,
        no_data: str | None = None,
    ) -> None:
        i = self.inps
        c.add(
            HASH35,
            "[Function-1]",
            "mergeBursts : ",
            f"stack : {self.work}/stack",
            "inp_reference : " + reference,
            "dirname : " + dirname,
            "name_pattern : " + pattern,
            "outfile : " + outfile,
            "method : top",
            "aligned : " + aligned,
            "valid_only : " + valid_only,
            "use_virtual_files : " + virtual,
            "multilook : " + multilook,
            "range_looks : " + i.rangeLooks,
            "azimuth_looks : " + i.azimuthLooks,
        )
        if tool:
            c.add("multilook_tool : " + tool)
        if no_data is not None:
            c.add("no_data_value : " + no_data)

    def unwrap_section(
        self,
        c: Config,
        func: str,
        ifg: str,
        unw: str,
        coh: str,
        rlks: str,
        alks: str,
        rmfilter: bool,
        method: str,
    ) -> None:
        c.add(
            HASH35,
            func,
            "unwrap : ",
            "ifg : " + ifg,
            "unw : " + unw,
            "coh : " + coh,
            "nomcf : " + NO_MCF,
            f"reference : {self.work}/reference",
            "defomax : " + DEFO_MAX,
            "rlks : " + rlks,
            "alks : " + alks,
            "rmfilter : True " if rmfilter else "rmfilter : False",
            "method : " + method,
        )

    # -- steps (names and order as in ISCE2's Stack.run)
    def unpack_reference(self, reference: str) -> None:
        c = self.config("config_reference")
        outdir = f"{self.work}/reference"
        self.sentinel1_tops(c, "[Function-1]", self.safe_dict[reference], outdir)
        self.topo(c, "[Function-2]", outdir, f"{self.work}/geom_reference")
        self.wrapper(c, 1, parallel=False)

    def unpack_secondaries(self, secondaries: list[str]) -> None:
        n = 0
        for d in secondaries:
            c = self.config("config_secondary_" + d)
            self.sentinel1_tops(c, "[Function-1]", self.safe_dict[d], f"{self.work}/secondarys/{d}")
            n = self.wrapper(c, n + 1, parallel=True)

    def average_baseline(self, reference: str, secondaries: list[str]) -> None:
        n = 0
        for d in secondaries:
            c = self.config("config_baseline_" + d)
            c.add(
                HASH26,
                "[Function-1]",
                "computeBaseline : ",
                f"reference : {self.work}/reference/",
                f"secondary : {self.work}/secondarys/{d}",
                f"baseline_file : {self.work}/baselines/{reference}_{d}/{reference}_{d}.txt",
            )
            n = self.wrapper(c, n + 1, parallel=True)

    def extract_overlaps(self) -> None:
        self.command(f"subsetReference.py -m {self.work}/reference -g {self.work}/geom_reference")

    def _misreg_files(self, d: str) -> tuple[str, str]:
        return (
            f"{self.work}/misreg/azimuth/dates/{d}.txt",
            f"{self.work}/misreg/range/dates/{d}.txt",
        )

    def geo2rdr_offset(self, secondaries: list[str], full_burst: bool) -> None:
        n = 0
        for d in secondaries:
            kind = "fullBurst" if full_burst else "overlap"
            c = self.config(f"config_{kind}_geo2rdr_{d}")
            self.geo2rdr(
                c,
                "[Function-1]",
                d,
                str(not full_burst),
                self._misreg_files(d) if full_burst else None,
            )
            n = self.wrapper(c, n + 1, parallel=True)

    def resample_with_carrier(self, secondaries: list[str], full_burst: bool) -> None:
        n = 0
        for d in secondaries:
            kind = "fullBurst" if full_burst else "overlap"
            c = self.config(f"config_{kind}_resample_{d}")
            self.resamp(
                c,
                "[Function-1]",
                d,
                str(not full_burst),
                self._misreg_files(d) if full_burst else None,
            )
            n = self.wrapper(c, n + 1, parallel=True)

    def pairs_misregistration(self, dates: list[str], reference: str) -> None:
        w, i = self.work, self.inps
        conn = int(i.num_overlap_connections) + 1
        pairs = [
            (dates[a], dates[b])
            for a in range(len(dates) - 1)
            for b in range(a + 1, a + conn)
            if b < len(dates)
        ]

        def slc(d: str) -> str:
            return f"{w}/reference" if d == reference else f"{w}/coreg_secondarys/{d}"

        n = 0
        for ref, sec in pairs:
            p = f"{ref}_{sec}"
            c = self.config("config_misreg_" + p)
            ifg = f"{w}/coarse_interferograms/{p}"
            self.generate_igram(c, "[Function-1]", slc(ref), slc(sec), ifg, "int", "True")
            c.add(
                HASH35,
                "[Function-2]",
                "overlap_withDEM : ",
                "interferogram : " + ifg,
                "reference_dir : " + slc(ref),
                "secondary_dir : " + slc(sec),
                f"overlap_dir : {w}/ESD/{p}",
            )
            c.add(
                HASH35,
                "[Function-3]",
                "estimateAzimuthMisreg : ",
                f"overlap_dir : {w}/ESD/{p}",
                f"out_azimuth : {w}/misreg/azimuth/pairs/{p}/{p}.txt",
                "coh_threshold : " + i.esdCoherenceThreshold,
                "plot : False",
            )
            c.add(
                HASH35,
                "[Function-4]",
                "estimateRangeMisreg : ",
                "reference : " + slc(ref),
                "secondary : " + slc(sec),
                f"out_range : {w}/misreg/range/pairs/{p}/{p}.txt",
                "snr_threshold : " + i.snrThreshold,
            )
            n = self.wrapper(c, n + 1, parallel=True)

    def timeseries_misregistration(self) -> None:
        w = self.work
        self.command(f"invertMisreg.py -i {w}/misreg/azimuth/pairs/ -o {w}/misreg/azimuth/dates/")
        self.command(f"invertMisreg.py -i {w}/misreg/range/pairs/ -o {w}/misreg/range/dates/")

    def extract_stack_valid_region(self) -> None:
        self.command(
            f"extractCommonValidRegion.py -m {self.work}/reference -s {self.work}/coreg_secondarys"
        )

    def merge_reference(self, reference: str, virtual: str) -> None:
        w = self.work
        c = self.config("config_merge_" + reference)
        self.merge_burst(
            c,
            reference=f"{w}/reference",
            dirname=f"{w}/reference",
            pattern="burst*slc",
            outfile=f"{w}/merged/SLC/{reference}/{reference}.slc",
            aligned="False",
            valid_only="True",
            virtual=virtual,
            multilook="False",
        )
        n = self.wrapper(c, 1, parallel=False)
        for layer in GEOMETRY_LAYERS:
            c = self.config("config_merge_" + layer)
            self.merge_burst(
                c,
                reference=f"{w}/reference",
                dirname=f"{w}/geom_reference",
                pattern=f"{layer}*rdr",
                outfile=f"{w}/merged/geom_reference/{layer}.rdr",
                aligned="False",
                valid_only="False",
                virtual=virtual,
                multilook="True",
                tool=_MULTILOOK_TOOL[layer],
                no_data=_NO_DATA[layer],
            )
            n = self.wrapper(c, n + 1, parallel=False)

    def merge_secondaries(self, secondaries: list[str], virtual: str) -> None:
        w = self.work
        n = 0
        for d in secondaries:
            c = self.config("config_merge_" + d)
            self.merge_burst(
                c,
                reference=f"{w}/coreg_secondarys/{d}",
                dirname=f"{w}/coreg_secondarys/{d}",
                pattern="burst*slc",
                outfile=f"{w}/merged/SLC/{d}/{d}.slc",
                aligned="True",
                valid_only="True",
                virtual=virtual,
                multilook="False",
            )
            n = self.wrapper(c, n + 1, parallel=False)

    def _slc_dir(self, d: str, reference: str) -> str:
        return f"{self.work}/reference" if d == reference else f"{self.work}/coreg_secondarys/{d}"

    def generate_burst_igram(self, pairs: list[tuple[str, str]], reference: str) -> None:
        n = 0
        for a, b in pairs:
            c = self.config(f"config_generate_igram_{a}_{b}")
            self.generate_igram(
                c,
                "[Function-1]",
                self._slc_dir(a, reference),
                self._slc_dir(b, reference),
                f"{self.work}/interferograms/{a}_{b}",
                "fine",
                "False",
            )
            n = self.wrapper(c, n + 1, parallel=True)

    def igram_merge_burst(self, pairs: list[tuple[str, str]]) -> None:
        w = self.work
        n = 0
        for a, b in pairs:
            c = self.config(f"config_merge_igram_{a}_{b}")
            ifg = f"{w}/interferograms/{a}_{b}"
            self.merge_burst(
                c,
                reference=ifg,
                dirname=ifg,
                pattern="fine*int",
                outfile=f"{w}/merged/interferograms/{a}_{b}/fine.int",
                aligned="True",
                valid_only="True",
                virtual="True",
                multilook="True",
            )
            n = self.wrapper(c, n + 1, parallel=True)

    def filter_coherence(self, pairs: list[tuple[str, str]]) -> None:
        w, i = self.work, self.inps
        n = 0
        for a, b in pairs:
            merged = f"{w}/merged/interferograms/{a}_{b}"
            cpx = f"{merged}/fine.cor" + (
                ".full" if int(i.rangeLooks) * int(i.azimuthLooks) == 1 else ""
            )
            c = self.config(f"config_igram_filt_coh_{a}_{b}")
            c.add(
                HASH35,
                "[Function-1]",
                "FilterAndCoherence : ",
                f"input : {merged}/fine.int",
                f"filt : {merged}/filt_fine.int",
                f"coh : {merged}/filt_fine.cor",
                "strength : " + i.filtStrength,
                f"slc1 : {w}/merged/SLC/{a}/{a}.slc.full",
                f"slc2 : {w}/merged/SLC/{b}/{b}.slc.full",
                "complex_coh : " + cpx,
                "range_looks : " + i.rangeLooks,
                "azimuth_looks : " + i.azimuthLooks,
            )
            n = self.wrapper(c, n + 1, parallel=True)

    def unwrap(self, pairs: list[tuple[str, str]]) -> None:
        i = self.inps
        n = 0
        for a, b in pairs:
            merged = f"{self.work}/merged/interferograms/{a}_{b}"
            c = self.config(f"config_igram_unw_{a}_{b}")
            self.unwrap_section(
                c,
                "[Function-1]",
                f"{merged}/filt_fine.int",
                f"{merged}/filt_fine.unw",
                f"{merged}/filt_fine.cor",
                i.rangeLooks,
                i.azimuthLooks,
                i.rmFilter,
                i.unwMethod,
            )
            n = self.wrapper(c, n + 1, parallel=True)

    # -- ionosphere (pairs all share the swath starting ranges in the simulator)
    def subband_and_resamp(self, dates: list[str], reference: str) -> None:
        w = self.work
        n = 0
        for d in dates:
            c = self.config(f"config_subband_and_resamp_{d}")
            if d == reference:
                c.add(HASH26, "[Function-1]", "subband : ", f"directory : {w}/reference")
            else:
                az, rg = self._misreg_files(d)
                c.add(
                    HASH26,
                    "[Function-1]",
                    "subband_and_resamp : ",
                    f"reference : {w}/reference",
                    f"secondary : {w}/secondarys/{d}",
                    f"coregdir : {w}/coreg_secondarys/{d}",
                    "azimuth_misreg : " + az,
                    "range_misreg : " + rg,
                )
            n = self.wrapper(c, n + 1, parallel=True)

    def generate_igram_ion(self, pairs: list[tuple[str, str]], reference: str) -> None:
        n = 0
        for a, b in pairs:
            c = self.config(f"config_generateIgram_ion_{a}_{b}")
            for func, band in (("[Function-1]", "lower"), ("[Function-2]", "upper")):
                c.add(
                    HASH35,
                    func,
                    "generateIgram : ",
                    "reference : " + self._slc_dir(a, reference),
                    f"reference_suffix : _{band}",
                    "secondary : " + self._slc_dir(b, reference),
                    f"secondary_suffix : _{band}",
                    f"interferogram : {self.work}/ion/{a}_{b}/{band}/interferograms",
                    "flatten : False",
                    "interferogram_prefix : fine",
                    "overlap : False",
                )
            n = self.wrapper(c, n + 1, parallel=True)

    def merge_bursts_ion(self, pairs: list[tuple[str, str]], ion: IonParams) -> None:
        w = self.work
        n = 0
        for a, b in pairs:
            c = self.config(f"config_mergeBurstsIon_{a}-{b}")
            base = f"{w}/ion/{a}_{b}"
            for func, band in (("[Function-1]", "lower"), ("[Function-2]", "upper")):
                c.add(
                    HASH35,
                    func,
                    "mergeBurstsIon : ",
                    f"reference : {w}/reference",
                    f"stack : {w}/stack",
                    f"dirname : {base}/{band}/interferograms",
                    "name_pattern : fine_*.int",
                    f"outfile : {base}/{band}/merged/fine.int",
                    f"nrlks : {ion.range_looks}",
                    f"nalks : {ion.azimuth_looks}",
                    f"nrlks0 : {ion.range_looks0}",
                    f"nalks0 : {ion.azimuth_looks0}",
                )
            c.add(
                HASH35,
                "[Function-3]",
                "coherenceIon : ",
                f"lower : {base}/lower/merged/fine.int",
                f"upper : {base}/upper/merged/fine.int",
                f"coherence : {base}/lower/merged/fine.cor",
            )
            n = self.wrapper(c, n + 1, parallel=False)

    def unwrap_ion(self, pairs: list[tuple[str, str]], ion: IonParams) -> None:
        n = 0
        for a, b in pairs:
            c = self.config(f"config_unwrap_ion_{a}-{b}")
            base = f"{self.work}/ion/{a}_{b}"
            for func, band in (("[Function-1]", "lower"), ("[Function-2]", "upper")):
                self.unwrap_section(
                    c,
                    func,
                    f"{base}/{band}/merged/fine.int",
                    f"{base}/{band}/merged/fine.unw",
                    f"{base}/lower/merged/fine.cor",
                    str(ion.range_looks0),
                    str(ion.azimuth_looks0),
                    False,
                    "snaphu",
                )
            n = self.wrapper(c, n + 1, parallel=False)

    def look_ion(self, pairs: list[tuple[str, str]], ion: IonParams) -> None:
        nrlks = round(ion.range_looks / ion.range_looks0)
        nalks = round(ion.azimuth_looks / ion.azimuth_looks0)
        n = 0
        for a, b in pairs:
            c = self.config(f"config_look_ion_{a}-{b}")
            base = f"{self.work}/ion/{a}_{b}"
            for func, band in (("[Function-1]", "lower"), ("[Function-2]", "upper")):
                c.add(
                    HASH35,
                    func,
                    "lookUnwIon : ",
                    f"unw : {base}/{band}/merged/fine.unw",
                    f"cor : {base}/lower/merged/fine.cor",
                    f"output : {base}/{band}/merged/fine_look.unw",
                    f"nrlks : {nrlks}",
                    f"nalks : {nalks}",
                )
            c.add(
                HASH35,
                "[Function-3]",
                "coherenceIon : ",
                f"lower : {base}/lower/merged/fine.int",
                f"upper : {base}/upper/merged/fine.int",
                f"coherence : {base}/lower/merged/fine_look.cor",
                f"nrlks : {nrlks}",
                f"nalks : {nalks}",
            )
            n = self.wrapper(c, n + 1, parallel=False)

    def compute_ion(self, pairs: list[tuple[str, str]], ion: IonParams) -> None:
        masked = "".join(
            f" --masked_areas {m[0]} {m[1]} {m[2]} {m[3]}" for m in ion.masked_areas or []
        )
        for a, b in pairs:
            base = f"{self.work}/ion/{a}_{b}"
            self.command(
                f"computeIon.py --lower {base}/lower/merged/fine_look.unw "
                f"--upper {base}/upper/merged/fine_look.unw "
                f"--coherence {base}/lower/merged/fine_look.cor "
                f"--ionosphere {base}/ion_cal/raw_no_projection.ion "
                f"--coherence_output {base}/ion_cal/raw_no_projection.cor{masked}"
            )

    def filt_ion(self, pairs: list[tuple[str, str]], ion: IonParams) -> None:
        n = 0
        for a, b in pairs:
            c = self.config(f"config_filtIon_{a}_{b}")
            base = f"{self.work}/ion/{a}_{b}/ion_cal"
            c.add(
                HASH35,
                "[Function-1]",
                "filtIon : ",
                f"input : {base}/raw_no_projection.ion",
                f"coherence : {base}/raw_no_projection.cor",
                f"output : {base}/filt.ion",
                f"win_min : {ion.filtering_winsize_min}",
                f"win_max : {ion.filtering_winsize_max}",
            )
            n = self.wrapper(c, n + 1, parallel=False)

    def invert_ion(self, ion: IonParams) -> None:
        w, i = self.work, self.inps
        self.command(
            f"invertIon.py --idir {w}/ion --odir {w}/ion_dates --nrlks1 {ion.range_looks} --nalks1 "
            f"{ion.azimuth_looks} --nrlks2 {i.rangeLooks} --nalks2 {i.azimuthLooks} --merged_geom "
            f"{w}/merged/geom_reference/hgt.rdr --interp --msk_overlap"
        )


@dataclass
class StackShape:
    """What the run files of one stackSentinel call are written for."""

    reference: str
    dates: list[str]
    secondaries: list[str]
    pairs: list[tuple[str, str]]
    update: bool
    ion: IonParams | None = None
    ion_dates: list[str] = field(default_factory=list)
    ion_pairs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ion_params(self) -> IonParams:
        if self.ion is None:
            raise StackSentinelError("an ionosphere step without --param_ion")
        return self.ion


def _merge(w: Writer, s: StackShape) -> None:
    virtual = w.inps.virtualMerge or "True"
    w.merge_reference(s.reference, virtual)
    w.merge_secondaries(s.secondaries, virtual)


# What each registered step writes into its run file (tasks.topsstack.steps gives the order).
WRITERS: dict[str, Callable[[Writer, StackShape], None]] = {
    "unpack_topo_reference": lambda w, s: w.unpack_reference(s.reference),
    "unpack_secondary_slc": lambda w, s: w.unpack_secondaries(s.secondaries),
    "average_baseline": lambda w, s: w.average_baseline(s.reference, s.secondaries),
    "extract_burst_overlaps": lambda w, s: w.extract_overlaps(),
    "overlap_geo2rdr": lambda w, s: w.geo2rdr_offset(s.secondaries, False),
    "overlap_resample": lambda w, s: w.resample_with_carrier(s.secondaries, False),
    "pairs_misreg": lambda w, s: w.pairs_misregistration(
        s.secondaries if s.update else s.dates, s.reference
    ),
    "timeseries_misreg": lambda w, s: w.timeseries_misregistration(),
    "fullBurst_geo2rdr": lambda w, s: w.geo2rdr_offset(s.secondaries, True),
    "fullBurst_resample": lambda w, s: w.resample_with_carrier(s.secondaries, True),
    "extract_stack_valid_region": lambda w, s: w.extract_stack_valid_region(),
    "merge_reference_secondary_slc": _merge,
    "generate_burst_igram": lambda w, s: w.generate_burst_igram(s.pairs, s.reference),
    "merge_burst_igram": lambda w, s: w.igram_merge_burst(s.pairs),
    "filter_coherence": lambda w, s: w.filter_coherence(s.pairs),
    "unwrap": lambda w, s: w.unwrap(s.pairs),
    "subband_and_resamp": lambda w, s: w.subband_and_resamp(s.ion_dates, s.reference),
    "generateIgram_ion": lambda w, s: w.generate_igram_ion(s.ion_pairs, s.reference),
    "mergeBurstsIon": lambda w, s: w.merge_bursts_ion(s.ion_pairs, s.ion_params),
    "unwrap_ion": lambda w, s: w.unwrap_ion(s.ion_pairs, s.ion_params),
    "look_ion": lambda w, s: w.look_ion(s.ion_pairs, s.ion_params),
    "computeIon": lambda w, s: w.compute_ion(s.ion_pairs, s.ion_params),
    "filtIon": lambda w, s: w.filt_ion(s.ion_pairs, s.ion_params),
    "invertIon": lambda w, s: w.invert_ion(s.ion_params),
}
# Steps whose outputs an update (existing coreg_secondarys/) reuses, so it writes no run file.
_NEW_STACK_ONLY = frozenset({"unpack_topo_reference", "extract_burst_overlaps"})


def write_steps(writer: Writer, shape: StackShape, workflows: set[str]) -> None:
    """One run file per registered step of ``workflows``, in the registry's order."""
    for step in steps.STEPS.values():
        if step.workflow not in workflows or (shape.update and step.name in _NEW_STACK_ONLY):
            continue
        write = WRITERS.get(step.name)
        if write is None:
            raise StackSentinelError(f"step {step.name!r} is not supported by the simulator")
        writer.start_run(step.name)
        write(writer, shape)
        writer.finish_run()


def interferogram_stack(writer: Writer, shape: StackShape) -> None:
    """The ``-W interferogram`` workflow (run files in ISCE2's order and numbering)."""
    nesd = writer.inps.coregistration in ("NESD", "nesd")
    write_steps(writer, shape, {"always", "NESD"} if nesd else {"always"})


def ionosphere_stack(writer: Writer, inps: argparse.Namespace, shape: StackShape) -> None:
    """run_17..run_24 (``--param_ion``)."""
    ion = IonParams.read(inps.param_ion)
    if ion.consider_burst_properties:
        raise StackSentinelError(
            "'consider burst properties in ionosphere computation' is not supported by the "
            "simulator; set it to False in " + inps.param_ion
        )
    saved_ref = inps.reference_date
    dates, _, _, safe_dict = get_dates(inps)
    inps.reference_date = saved_ref
    pairs = select_ion_pairs(dates, inps.num_connections_ion)
    ion_dir = Path(writer.work) / "ion"
    if ion_dir.is_dir():
        print("previous ionosphere estimation directory found")
        print("exclude already processed pairs for ionosphere estimation")
        done = {tuple(p.name.split("_")) for p in ion_dir.glob("*") if p.is_dir()}
        pairs = [p for p in pairs if p not in done]
    ion_dates = sorted({d for p in pairs for d in p})
    report = "ionosphere phase estimation pairs with different swath starting ranges\n"
    report += "\nionosphere phase estimation pairs with different platforms\n"
    for a, b in select_ion_pairs(dates, inps.num_connections_ion):
        if safe_dict[a].platform != safe_dict[b].platform:
            report += f"{a}_{b}\n"
    Path("pairs_diff_starting_ranges.txt").write_text(report)
    shape.ion, shape.ion_dates, shape.ion_pairs = ion, ion_dates, pairs
    write_steps(writer, shape, {"ion"})


def _store_scene(inps: argparse.Namespace, reference: str) -> None:
    """Copy the synthetic scene into the stack and write its truth.

    The stack's reference date and looks (-m, -z, -r) apply to the stored scene: products
    are written on the ``length`` x ``width`` grid at those looks.
    """
    slc = Path(inps.slc_dirname)
    scene_file = (slc.parent if slc.is_file() else slc) / SCENE_FILE
    try:
        spec = SceneSpec.load(scene_file)
    except FileNotFoundError:
        raise StackSentinelError(
            f"{scene_file} not found: the simulator needs the synthetic SLC directory written by "
            "insarflow.simulator.acquisition.make_synthetic_acquisitions (or use real ISCE2)"
        ) from None
    try:
        spec = spec.replace(
            reference_date=reference,
            range_looks=int(inps.rangeLooks),
            azimuth_looks=int(inps.azimuthLooks),
        )
    except ValueError as exc:
        raise StackSentinelError(
            f"looks -z {inps.azimuthLooks} -r {inps.rangeLooks}: {exc}"
        ) from exc
    sim_dir = Path(inps.work_dir) / "simulator"
    stored = sim_dir / "scene.json"
    if stored.is_file():
        old = SceneSpec.load(stored)
        if old.replace(dates=spec.dates) != spec:
            raise StackSentinelError(
                f"{scene_file} describes a different scene than the existing stack ({stored}); "
                "use a new work directory or the same scene settings"
            )
    atomic.write_text(stored, spec.to_json(), skip_unchanged=True)
    write_truth(sim_dir / "truth.h5", make_truth(spec))


def main(argv: Sequence[str] | None = None) -> int:
    """Run like ``stackSentinel.py``; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    inps = parse_args(args)
    run_files = Path(inps.work_dir) / "run_files"
    if run_files.exists():
        print("")
        print("**************************")
        print("run_files folder exists.")
        print(str(run_files), " already exists.")
        print("Please remove or rename this folder and try again.")
        print("")
        print("**************************")
        return 1
    if inps.workflow != "interferogram":
        print(
            f"Error: the simulator supports -W interferogram only, not {inps.workflow}",
            file=sys.stderr,
        )
        return 2
    try:
        dates, reference, secondaries, safe_dict, update = check_current_status(inps)
        _store_scene(inps, reference)
        pairs = select_neighbor_pairs(dates, reference, secondaries, inps.num_connections, update)
        print("*****************************************")
        print("Coregistration method: ", inps.coregistration)
        print("Workflow: ", inps.workflow)
        print("*****************************************")
        writer = Writer(inps, safe_dict)
        shape = StackShape(reference, dates, secondaries, pairs, update)
        interferogram_stack(writer, shape)
        if inps.param_ion is not None:
            ionosphere_stack(writer, inps, shape)
        else:
            print("Ion parameter file is not specified. Ionospheric estimation will not be done.")
    except StackSentinelError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
