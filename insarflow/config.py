"""The stack configuration: one pydantic model tree is the whole run.

YAML in and out, ``extra="forbid"`` everywhere, a description on every field (the
Prefect UI renders the model as a form, ``insarflow config`` writes it as a commented
template). Validation happens here, before anything is downloaded; every message
names the field, the value and the fix.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from insarflow.constants import STAGES, Stage, TroposphereMethod, UnwrapErrorMethod

Engine = Literal["isce2", "simulator"]
Coregistration = Literal["geometry", "NESD"]
Polarization = Literal["vv", "vh", "hh", "hv"]
FlightDirection = Literal["ASCENDING", "DESCENDING"]
ExportFormat = Literal["zarr", "geotiff", "netcdf"]
Platform = Literal["S1A", "S1B", "S1C"]
Swath = Literal[1, 2, 3]


def stage_range(from_stage: str, until: str) -> list[Stage]:
    """The stages from ``from_stage`` to ``until``, in order; ValueError naming the fix."""
    for name, value in (("from_stage", from_stage), ("until", until)):
        if value not in STAGES:
            raise ValueError(f"{name} {value!r} is not a stage; use one of {', '.join(STAGES)}")
    first, last = STAGES.index(from_stage), STAGES.index(until)
    if first > last:
        raise ValueError(f"from_stage {from_stage} comes after until {until}; swap them")
    return list(STAGES[first : last + 1])


def _not_empty(field: str, value: Any, choices: tuple[Any, ...]) -> Any:
    """Refuse an empty list, naming the field and the values it can hold."""
    if isinstance(value, list) and not value:
        listed = ", ".join(map(str, choices))
        raise ValueError(
            f"{field} is empty; list at least one of {listed}, e.g. [{listed}] (or leave the "
            "field out for the default)"
        )
    return value


class Model(BaseModel):
    """Base: unknown keys are errors, values are re-validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def bbox_problems(bbox: tuple[float, float, float, float]) -> list[str]:
    """Every problem with a bounding box given as S N W E, each with its fix."""
    south, north, west, east = bbox
    problems = []
    lat_bad = [v for v in (south, north) if not -90 <= v <= 90]
    if lat_bad:
        hint = ""
        if all(-90 <= v <= 90 for v in (west, east)):
            hint = (
                f" It looks like W E S N order; ISCE2 then fails much later with "
                f"'IndexError: too many indices for array'. Did you mean "
                f"[{west}, {east}, {south}, {north}]?"
            )
        problems.append(f"latitude {lat_bad[0]} is outside [-90, 90]: bbox must be S N W E.{hint}")
    if south >= north:
        problems.append(
            f"south {south} is not below north {north}: give the smaller latitude first (S N W E)."
        )
    lon_bad = [v for v in (west, east) if not -180 <= v <= 180]
    if lon_bad:
        problems.append(f"longitude {lon_bad[0]} is outside [-180, 180]: bbox must be S N W E.")
    elif west >= east and not lat_bad:
        problems.append(
            f"west {west} is not below east {east}: give the western longitude first "
            "(areas crossing the antimeridian are not supported)."
        )
    return problems


class AreaConfig(Model):
    """Where: a bounding box or a WKT polygon (exactly one)."""

    bbox: tuple[float, float, float, float] | None = Field(
        default=None,
        description="Bounding box in S N W E order (degrees), as stackSentinel.py -b expects. "
        "Bursts touching it are kept (it does not clip).",
    )
    wkt: str | None = Field(
        default=None, description="Alternatively, the area as a WKT POLYGON in lon/lat degrees."
    )

    @field_validator("bbox")
    @classmethod
    def _check_bbox(
        cls, v: tuple[float, float, float, float] | None
    ) -> tuple[float, float, float, float] | None:
        if v is not None and (problems := bbox_problems(v)):
            raise ValueError("\n".join(problems))
        return v

    @field_validator("wkt")
    @classmethod
    def _check_wkt(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from shapely import wkt as shapely_wkt
        from shapely.errors import ShapelyError

        try:
            geom = shapely_wkt.loads(v)
        except ShapelyError as exc:
            raise ValueError(
                f"not a valid WKT polygon ({exc}); fix: e.g. 'POLYGON((W S, E S, E N, W N, W S))'"
            ) from exc
        if geom.geom_type not in ("Polygon", "MultiPolygon") or geom.is_empty:
            raise ValueError(f"WKT must be a POLYGON, got {geom.geom_type}; fix: give a polygon")
        minx, miny, maxx, maxy = geom.bounds
        if not (-90 <= miny <= maxy <= 90 and -180 <= minx <= maxx <= 180):
            raise ValueError(
                "WKT coordinates must be lon lat degrees (x = longitude, y = latitude)"
            )
        return v

    @model_validator(mode="after")
    def _exactly_one(self) -> AreaConfig:
        if (self.bbox is None) == (self.wkt is None):
            raise ValueError("give exactly one of area.bbox (S N W E) or area.wkt (POLYGON)")
        return self

    def field_name(self) -> str:
        """The field the area was given in, for messages."""
        return "area.bbox" if self.bbox is not None else "area.wkt"

    def snwe(self) -> tuple[float, float, float, float]:
        """The area as S N W E (the polygon's bounds when a WKT is given)."""
        if self.bbox is not None:
            return self.bbox
        from shapely import wkt as shapely_wkt

        minx, miny, maxx, maxy = shapely_wkt.loads(self.wkt).bounds
        return (miny, maxy, minx, maxx)


class AcquisitionConfig(Model):
    """Which Sentinel-1 acquisitions, and how to fetch them."""

    track: int = Field(ge=1, le=175, description="Relative orbit (track) number, 1-175.")
    frame: int | None = Field(default=None, ge=0, description="ASF frame number (optional).")
    flight_direction: FlightDirection | None = Field(
        default=None, description="ASCENDING or DESCENDING (optional filter)."
    )
    start: date = Field(description="First acquisition date to include (YYYY-MM-DD).")
    end: date | None = Field(
        default=None,
        description="Last acquisition date to include (YYYY-MM-DD); empty: open-ended, every "
        "acquisition up to today (a monitoring stack that scheduled updates extend).",
    )
    polarization: Polarization = Field(default="vv", description="Polarization to process.")
    # Plain list defaults (pydantic copies them per instance) so that the JSON schema, and
    # with it the Prefect form, shows them; a default_factory would not.
    platforms: list[Platform] = Field(
        default=list(get_args(Platform)), min_length=1, description="Platforms to search."
    )
    exclude_dates: list[date] = Field(
        default=[], description="Acquisition dates to leave out of the stack."
    )
    max_parallel_downloads: int = Field(
        default=4, ge=1, le=16, description="Concurrent SLC downloads (ASF allows a few)."
    )
    dem_source: Literal["copernicus", "isce2"] = Field(
        default="copernicus",
        description="copernicus: GLO-30 via dem-stitcher (ellipsoidal heights); "
        "isce2: ISCE2's dem.py -a stitch (SRTM, needs ISCE2).",
    )
    credentials_secret_block: str | None = Field(
        default=None,
        description="Name of a Prefect Secret block holding 'username:password' for Earthdata. "
        "Otherwise ~/.netrc (mode 600) or EARTHDATA_USERNAME/EARTHDATA_PASSWORD are used.",
    )

    @field_validator("platforms", mode="before")
    @classmethod
    def _some_platform(cls, v: Any) -> Any:
        return _not_empty("platforms", v, get_args(Platform))

    def last_date(self) -> date:
        """``end``, or today for an open-ended stack."""
        return self.end if self.end is not None else date.today()

    @field_validator("end")
    @classmethod
    def _dates_ordered(cls, end: date | None, info: ValidationInfo) -> date | None:
        # A field validator (not a model validator) so the order is reported together with
        # any other field's problem.
        start = info.data.get("start")
        if start is not None and end is not None and start >= end:
            raise ValueError(f"start {start} is not before end {end}: swap them or widen the range")
        return end


class InputsConfig(Model):
    """Files already on disk (the manual workflow's SLC/, orbits/ and DEM): used in place.

    They are never moved, modified or deleted: the work directory links to them.
    """

    slc_dir: Path | None = Field(
        default=None,
        description="Folder of Sentinel-1 SAFE zips already downloaded; those matching the "
        "track, dates, platforms and exclusions are used.",
    )
    orbit_dir: Path | None = Field(
        default=None,
        description="Folder of orbit files (*.EOF, precise or restituted) already downloaded.",
    )
    dem: Path | None = Field(
        default=None,
        description="A DEM covering the area: ISCE2 format (the .dem.wgs84 file, with its .xml "
        "and .vrt beside it) or a GeoTIFF (converted on the way in). Heights above the WGS84 "
        "ellipsoid, as ISCE2 expects. Replaces acquisition.dem_source.",
    )
    download_missing: bool = Field(
        default=True,
        description="Search ASF for acquisitions (and orbits) the folders lack and download "
        "them; Earthdata credentials are needed only when something is missing. false: "
        "process only what is on disk, with no network at all.",
    )


class Isce2Config(Model):
    """Where ISCE2 comes from: its own environment, never insarflow's."""

    env_script: Path | None = Field(
        default=None,
        description="Shell file sourced before every ISCE2 command (the env.sh that `make "
        "isce2` writes, or conda activation lines). Empty: ISCE2 from the current PATH.",
    )


class TopsStackConfig(Model):
    """stackSentinel.py options (see its --help); --num_proc is never used."""

    swaths: list[Swath] = Field(
        default=[1, 2, 3], min_length=1, description="IW swaths to process, subset of 1 2 3 (-n)."
    )
    reference_date: date | None = Field(
        default=None, description="Reference (coregistration) date (-m); default: the first date."
    )
    coregistration: Coregistration = Field(
        default="NESD",
        description="geometry or NESD (-C): NESD refines azimuth coregistration from burst "
        "overlaps, costs more time and disk.",
    )
    connections: int = Field(
        default=3, ge=1, description="Interferograms per date to later dates (-c)."
    )
    azimuth_looks: int = Field(default=3, ge=1, description="Azimuth looks (-z).")
    range_looks: int = Field(default=9, ge=1, description="Range looks (-r).")
    filter_strength: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Goldstein filter strength in [0, 1] (-f)."
    )
    num_overlap_connections: int = Field(
        default=3, ge=1, description="NESD: overlap interferograms per date (-O)."
    )
    esd_coherence_threshold: float = Field(
        default=0.85, ge=0.0, le=1.0, description="NESD: coherence threshold for ESD (-e)."
    )
    use_gpu: bool = Field(default=False, description="Run topo/geo2rdr on a GPU (--useGPU).")
    split_swaths: bool = Field(
        default=True,
        description="engine isce2: run the reference's unpack and topo line and each "
        "secondary unpack, geo2rdr, resample and burst interferogram line as one task per "
        "swath (the same files; swaths in parallel); "
        "false: each line whole, as stackSentinel wrote it.",
    )
    ion_param_file: Path | None = Field(
        default=None,
        description="Ionosphere parameter file (--param_ion); enables run_17..run_24.",
    )

    @field_validator("swaths", mode="before")
    @classmethod
    def _swath_numbers(cls, v: Any) -> Any:
        if not isinstance(v, list):
            example = f"[{v}]" if v in (1, 2, 3) else "[3]"
            raise ValueError(f"swaths must be a list of swath numbers, e.g. {example} or [1, 2, 3]")
        names = [s for s in v if isinstance(s, str) and s.upper().removeprefix("IW").isdigit()]
        if names:
            numbers = [int(s.upper().removeprefix("IW")) if s in names else s for s in v]
            raise ValueError(f"swaths are numbers, not names: write {numbers} instead of {v}")
        bad = [s for s in v if s not in get_args(Swath)]
        if bad or not v:
            raise ValueError(
                f"swaths {v} must be a non-empty subset of 1, 2, 3 (IW1-IW3); "
                f"remove {bad if bad else 'nothing'}: e.g. [1, 2, 3]"
            )
        return v

    @field_validator("swaths")
    @classmethod
    def _check_swaths(cls, v: list[Swath]) -> list[Swath]:
        if len(set(v)) != len(v):
            raise ValueError(f"swaths {v} lists a swath twice; list each once")
        return sorted(v)


class ReferencePoint(Model):
    """A reference point as latitude/longitude."""

    lat: float = Field(ge=-90, le=90, description="Latitude in degrees.")
    lon: float = Field(ge=-180, le=180, description="Longitude in degrees.")


_MINTPY_KEY = re.compile(r"^mintpy\.[A-Za-z0-9_.]+$")


class MintpyConfig(Model):
    """MintPy smallbaselineApp options."""

    reference_point: ReferencePoint | None = Field(
        default=None, description="Spatial reference point; default: MintPy chooses (auto)."
    )
    reference_date: date | None = Field(
        default=None, description="Temporal reference date; default: MintPy chooses (auto)."
    )
    unwrap_error: UnwrapErrorMethod = Field(
        default="bridging", description="Unwrapping-error correction method."
    )
    troposphere: TroposphereMethod = Field(
        default="no",
        description="Tropospheric correction. 'pyaps' needs ERA5 through the CDS API "
        "(~/.cdsapirc with a key); 'no' unless that is set up.",
    )
    max_memory_gb: float = Field(
        default=4.0, gt=0, description="mintpy.compute.maxMemory in GB per worker."
    )
    allow_missing_interferograms: bool = Field(
        default=False,
        description="Drop interferograms with missing/incomplete files instead of failing.",
    )
    plot: bool = Field(
        default=True,
        description="MintPy's own figures in mintpy/pic (smallbaselineApp.py --plot, as "
        "mintpy.plot = yes gives them; about a minute even for a small stack).",
    )
    extra: dict[str, str] = Field(
        default={},
        description="Extra raw mintpy.* keys for smallbaselineApp.cfg (unknown keys are errors).",
    )

    @field_validator("extra")
    @classmethod
    def _check_extra(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if not _MINTPY_KEY.match(k)]
        if bad:
            raise ValueError(
                f"extra keys {bad} are not mintpy.* keys; fix: use the full key, "
                "e.g. 'mintpy.network.coherenceBased'"
            )
        return v


class ExportConfig(Model):
    """Products written after MintPy."""

    formats: list[ExportFormat] = Field(
        default=["zarr", "geotiff"], min_length=1, description="Export formats."
    )
    figures: bool = Field(
        default=True, description="Write PNG figures and embed them in the report."
    )
    chunk_size: int = Field(
        default=256,
        ge=16,
        le=4096,
        description="Spatial chunk edge (pixels) of the zarr store (y and x); every chunk "
        "holds all dates.",
    )
    points: list[tuple[float, float]] = Field(
        default=[],
        description="Points [[lat, lon], ...] (degrees) whose time series the figure and the "
        "report show; empty: up to 4 coherent pixels of low velocity uncertainty are chosen. "
        "Each must lie inside area; one that falls outside the geocoded scene or on a masked "
        "pixel is named in the report.",
    )

    @field_validator("formats", mode="before")
    @classmethod
    def _some_format(cls, v: Any) -> Any:
        return _not_empty("formats", v, get_args(ExportFormat))

    @field_validator("points")
    @classmethod
    def _check_points(cls, v: list[tuple[float, float]]) -> list[tuple[float, float]]:
        for i, (lat, lon) in enumerate(v):
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise ValueError(
                    f"points[{i}] = [{lat}, {lon}] is not [lat, lon] in degrees: latitude must "
                    "be in [-90, 90] and longitude in [-180, 180] (give latitude first)"
                )
        return v


class JobqueueConfig(Model):
    """A dask-jobqueue cluster (SLURM or PBS)."""

    kind: Literal["slurm", "pbs"] = Field(description="Batch system.")
    queue: str | None = Field(default=None, description="Queue / partition.")
    account: str | None = Field(default=None, description="Account / project to charge.")
    cores: int = Field(default=8, ge=1, description="Cores per job.")
    memory_gb: float = Field(default=32, gt=0, description="Memory per job in GB.")
    walltime: str = Field(default="04:00:00", description="Walltime per job (HH:MM:SS).")
    jobs: int = Field(
        default=2,
        ge=1,
        description="Most jobs (one Dask worker each) at once; the cluster adapts between "
        "min_jobs and this many as lines queue and finish.",
    )
    min_jobs: int = Field(
        default=1,
        ge=0,
        description="Jobs kept even when no line waits (a lost job is replaced up to this).",
    )
    gpus_per_job: int = Field(
        default=0, ge=0, description="GPUs per job, advertised as resource GPU."
    )

    @model_validator(mode="after")
    def _min_within_max(self) -> JobqueueConfig:
        if self.min_jobs > self.jobs:
            raise ValueError(
                f"compute.jobqueue.min_jobs = {self.min_jobs} is more than compute.jobqueue.jobs "
                f"= {self.jobs}: lower min_jobs or raise jobs"
            )
        return self


class ComputeConfig(Model):
    """Where tasks run: a local Dask cluster, an existing scheduler, or a batch cluster."""

    workers: int = Field(default=2, ge=1, description="Local Dask workers.")
    threads_per_worker: int = Field(default=1, ge=1, description="Threads per local worker.")
    memory_gb: float = Field(
        default=8.0,
        gt=0,
        description="Memory budget (GB) for concurrently running topsStack lines; each line "
        "reserves its estimate so the sum stays below this (with jobqueue: unused, the budget "
        "is what its jobs advertise).",
    )
    learn_memory: bool = Field(
        default=True,
        description="Refine each topsStack step's memory estimate from the peak RSS of its "
        "lines that ran (kept in the stack directory, so reruns and updates start from it); "
        "false: the fixed model only.",
    )
    gpus: int = Field(
        default=0,
        ge=0,
        description="GPUs of this machine for the local cluster: at most this many GPU lines "
        "run at once, each with CUDA_VISIBLE_DEVICES of its own GPU (0..gpus-1).",
    )
    scheduler_address: str | None = Field(
        default=None,
        description="Address of an existing Dask scheduler (tcp://host:8786): topsStack lines "
        "and the chunks of MintPy's invert_network and correct_topography run on its workers "
        "(which need MintPy installed and the work directory at the same path).",
    )
    jobqueue: JobqueueConfig | None = Field(
        default=None, description="Start a dask-jobqueue cluster instead of a local one."
    )

    @model_validator(mode="after")
    def _one_cluster(self) -> ComputeConfig:
        if self.scheduler_address and self.jobqueue:
            raise ValueError("give compute.scheduler_address or compute.jobqueue, not both")
        return self


class SimulatorConfig(Model):
    """The synthetic scene used with engine: simulator (demo, teaching, testing)."""

    seed: int = Field(default=42, description="Random seed; same seed, same products.")
    dates: int = Field(default=12, ge=3, le=200, description="Number of synthetic acquisitions.")
    interval_days: int = Field(default=12, ge=1, description="Days between acquisitions.")
    length: int = Field(default=150, ge=20, description="Multilooked raster length (azimuth).")
    width: int = Field(default=200, ge=20, description="Multilooked raster width (range).")


class StackConfig(Model):
    """One InSAR stack: what to process, how, and where."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Stack name (letters, digits, _ . -); names deployments and products.",
    )
    work_dir: Path = Field(description="Work directory; all stages write below it.")
    engine: Engine = Field(
        default="isce2",
        description="isce2: real ISCE2 topsStack (must be installed); simulator: the built-in "
        "stand-in with a synthetic scene (never chosen silently).",
    )
    area: AreaConfig = Field(description="Area of interest.")
    acquisition: AcquisitionConfig = Field(description="Sentinel-1 search and download.")
    inputs: InputsConfig = Field(
        default_factory=InputsConfig, description="Inputs already on disk (optional)."
    )
    isce2: Isce2Config = Field(
        default_factory=Isce2Config, description="The ISCE2 installation to run."
    )
    topsstack: TopsStackConfig = Field(
        default_factory=TopsStackConfig, description="ISCE2 topsStack options."
    )
    mintpy: MintpyConfig = Field(default_factory=MintpyConfig, description="MintPy options.")
    export: ExportConfig = Field(default_factory=ExportConfig, description="Products.")
    compute: ComputeConfig = Field(
        default_factory=ComputeConfig,
        validate_default=True,  # the GPU cross-check applies to the default too
        description="Compute resources.",
    )
    simulator: SimulatorConfig = Field(
        default_factory=SimulatorConfig, description="Synthetic scene (engine: simulator only)."
    )

    # Cross-field checks are field validators of the later field (the fields before it are in
    # ``info.data`` when valid), so they are reported with every other problem at once.
    @field_validator("topsstack")
    @classmethod
    def _reference_in_range(cls, ts: TopsStackConfig, info: ValidationInfo) -> TopsStackConfig:
        ref, acq = ts.reference_date, info.data.get("acquisition")
        if ref is not None and acq is not None and not acq.start <= ref <= acq.last_date():
            raise ValueError(
                f"topsstack.reference_date {ref} is outside acquisition.start..end "
                f"({acq.start}..{acq.end or 'today'}); pick a date inside the range or leave "
                "it empty"
            )
        return ts

    @field_validator("export")
    @classmethod
    def _points_in_area(cls, export: ExportConfig, info: ValidationInfo) -> ExportConfig:
        area = info.data.get("area")
        if area is None:
            return export
        south, north, west, east = area.snwe()
        for i, (lat, lon) in enumerate(export.points):
            if not (south <= lat <= north and west <= lon <= east):
                raise ValueError(
                    f"export.points[{i}] = [{lat}, {lon}] lies outside area (S N W E {south} "
                    f"{north} {west} {east}); give a point inside the area or remove it"
                )
        return export

    @field_validator("compute")
    @classmethod
    def _gpu_available(cls, compute: ComputeConfig, info: ValidationInfo) -> ComputeConfig:
        ts = info.data.get("topsstack")
        if ts is None or not ts.use_gpu or compute.scheduler_address:
            return compute  # an existing scheduler's workers are checked when the stage starts
        gpus = compute.jobqueue.gpus_per_job if compute.jobqueue else compute.gpus
        if not gpus:
            where = "compute.jobqueue.gpus_per_job" if compute.jobqueue else "compute.gpus"
            raise ValueError(
                f"topsstack.use_gpu is true but {where} is 0: set {where} to the number of "
                "GPUs, or set topsstack.use_gpu to false"
            )
        return compute

    @property
    def paths(self) -> WorkPaths:
        return WorkPaths.from_work_dir(self.work_dir)

    def fingerprint(self) -> str:
        """Short hash of the configuration (provenance of products)."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class WorkPaths(BaseModel):
    """The work-directory layout, derived from ``work_dir``."""

    model_config = ConfigDict(frozen=True)

    root: Path
    slc: Path
    orbits: Path
    dem: Path
    aux: Path
    stack: Path
    mintpy: Path
    products: Path
    logs: Path

    @classmethod
    def from_work_dir(cls, work_dir: Path) -> WorkPaths:
        root = work_dir.expanduser().absolute()
        return cls(
            root=root,
            slc=root / "SLC",
            orbits=root / "orbits",
            dem=root / "dem",
            aux=root / "aux",
            stack=root / "stack",
            mintpy=root / "mintpy",
            products=root / "products",
            logs=root / "logs",
        )


# --------------------------------------------------------------------------- YAML I/O


class ConfigError(ValueError):
    """A configuration that failed validation; ``issues`` lists every problem."""

    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = issues
        lines = [f"{len(issues)} problem(s) in {source}:"]
        lines += [f"  {issue.field}: {issue.message}" for issue in issues]
        super().__init__("\n".join(lines))


class ConfigIssue(BaseModel):
    """One validation problem: the field, the value given, and the message with its fix."""

    field: str
    value: Any = None
    message: str


# What to do about pydantic's generic errors, by error type (validators write their own fix).
_FIXES = {
    "int_parsing": "give a whole number",
    "int_type": "give a whole number",
    "int_from_float": "give a whole number",
    "float_parsing": "give a number",
    "float_type": "give a number",
    "bool_parsing": "give true or false",
    "bool_type": "give true or false",
    "list_type": "give a list, e.g. [1, 2]",
    "tuple_type": "give a list, e.g. [1, 2]",
    "string_type": "give text (quote it if YAML reads it as something else)",
    "date_from_datetime_parsing": "give a date as YYYY-MM-DD",
    "date_parsing": "give a date as YYYY-MM-DD",
    "date_type": "give a date as YYYY-MM-DD",
    "greater_than_equal": "raise it",
    "greater_than": "raise it",
    "less_than_equal": "lower it",
    "less_than": "lower it",
    "literal_error": "use one of the values listed",
    "string_pattern_mismatch": "use only the characters the description allows",
    "too_short": "add items",
    "too_long": "remove items",
    "model_type": "give a mapping of keys (see `insarflow config`)",
    "dict_type": "give a mapping of keys (see `insarflow config`)",
}


def _issues(exc: ValidationError) -> list[ConfigIssue]:
    issues = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key; remove it or check the spelling (see `insarflow config`)"
        elif err["type"] == "missing":
            msg = "required field is missing; add it (see `insarflow config`)"
        elif err["type"] in _FIXES:
            msg = f"{msg}; fix: {_FIXES[err['type']]}"
        for part in msg.split("\n"):
            issues.append(ConfigIssue(field=loc, value=err.get("input"), message=part))
    return issues


def parse_config(data: Any, source: str = "config") -> StackConfig:
    """Validate a mapping; raise :class:`ConfigError` listing every problem at once."""
    if not isinstance(data, dict):
        raise ConfigError(
            source,
            [ConfigIssue(field="(top level)", value=data, message="expected a YAML mapping")],
        )
    try:
        return StackConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _issues(exc)) from None


def load_config_text(text: str, source: str = "config") -> StackConfig:
    """Parse YAML text into a validated :class:`StackConfig`."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(
            source, [ConfigIssue(field="(yaml)", message=f"not valid YAML: {exc}")]
        ) from None
    return parse_config(data, source)


def load_config(path: Path) -> StackConfig:
    """Read and validate a YAML configuration file."""
    return load_config_text(path.read_text(encoding="utf-8"), str(path))


def dump_config(config: StackConfig) -> str:
    """The configuration as YAML (round-trips through :func:`load_config_text`)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


# --------------------------------------------------------------- commented template


def example_config() -> StackConfig:
    """The template's stack: the reference study's track, frame, area and dates, and every
    option at its default (the Prefect form's starting values).

    The defaults are stackSentinel.py's own (-n 1 2 3, -C NESD, -z 3, -r 9, -f 0.5, no
    --useGPU), so they run on any machine; the reference study's processing choices (swath 3,
    geometry, 1 x 6 looks, filter 0.6, a GPU) are in examples/track142_eastchina.yaml.
    """
    return StackConfig(
        name="track142",
        work_dir=Path("./track142"),
        area=AreaConfig(bbox=(34.00, 34.60, 116.50, 117.95)),
        acquisition=AcquisitionConfig(
            track=142, frame=106, start=date(2024, 12, 1), end=date(2025, 4, 15)
        ),
    )


def _yaml_scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _commented(model: BaseModel, indent: int) -> list[str]:
    lines: list[str] = []
    pad = " " * indent
    data = model.model_dump(mode="json")
    for name, field in type(model).model_fields.items():
        if field.description:
            for i, chunk in enumerate(_wrap(field.description, 88 - indent)):
                lines.append(f"{pad}# {chunk}" if i == 0 else f"{pad}#   {chunk}")
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:")
            lines.extend(_commented(value, indent + 2))
        else:
            lines.append(f"{pad}{name}: {_yaml_scalar(data[name])}")
    return lines


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=max(width, 30)) or [""]


def config_template(config: StackConfig | None = None) -> str:
    """A YAML template with every field's description as a comment."""
    config = config or example_config()
    header = [
        "# insarflow stack configuration",
        "# Validate with `insarflow validate FILE`; see what would run with `insarflow plan FILE`.",
    ]
    # Optional sub-models left as null still get documented.
    return "\n".join([*header, *_commented(config, 0)]) + "\n"


def config_schema() -> dict[str, Any]:
    """The JSON schema of :class:`StackConfig` (what the Prefect UI form is built from)."""
    return StackConfig.model_json_schema()
