"""The MintPy SBAS stage: topsStack outputs -> ``timeseries.h5`` / ``velocity.h5``.

Order of use (each a plain function with a thin Prefect task):

1. :func:`preflight_check` — every file MintPy will read exists and matches its XML
   sidecar; incomplete interferograms fail the stage with a list, or are moved aside
   to ``merged/interferograms.excluded/`` when the caller allows missing pairs.
2. :func:`prepare_mintpy_metadata` — writes ``reference/data.rsc`` from the ISCE XML
   (see :mod:`insarflow.tasks.sbas_metadata`), then runs MintPy's ``prep_isce`` for the per-file
   ``.rsc`` sidecars, so no step ever needs the ``isce`` module.
3. :func:`write_smallbaseline_cfg` — ``smallbaselineApp.cfg`` with absolute paths.
4. :func:`run_mintpy_step` for each of :func:`mintpy_steps` — one
   ``smallbaselineApp.py <cfg> --dostep <step>`` per step; MintPy's own skip logic
   makes a re-run resume. A step that was killed or failed has the files it created
   (and the HDF5 files it rewrites wholesale) removed before the next attempt, so a
   partial output never passes MintPy's "exists and is newer" check.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import sys
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.util import find_spec
from pathlib import Path
from typing import Literal, get_args

from prefect import task
from prefect.cache_policies import NO_CACHE

import insarflow
from insarflow import atomic
from insarflow.constants import (
    GEOMETRY_LAYERS,
    MINTPY_STEPS,
    TroposphereMethod,
    UnwrapErrorMethod,
)
from insarflow.tasks.isce_io import baseline_values, is_complete, is_finite_number, read_isce_info
from insarflow.tasks.sbas_metadata import (
    REQUIRED_KEYS,
    MetadataError,
    find_meta_file,
    read_rsc,
    read_tops_product,
    write_data_rsc,
)
from insarflow.tasks.shell import CommandError, CommandResult, run_command

__all__ = [
    "GEOMETRY_FILES",
    "IFG_FILES",
    "MEMORY_HEAVY_STEPS",
    "MINTPY_STEPS",
    "MINTPY_STEP_TASKS",
    "OPTIONAL_STEPS",
    "MetadataError",
    "MetadataReport",
    "PreflightError",
    "PreflightReport",
    "SbasOutputs",
    "inversion_stamp",
    "mintpy_step_task",
    "mintpy_steps",
    "plot_mintpy_results",
    "plot_task",
    "preflight_check",
    "preflight_task",
    "prepare_metadata_task",
    "prepare_mintpy_metadata",
    "reinversion_note",
    "run_mintpy_step",
    "sbas_outputs",
    "valid_cfg_keys",
    "write_cfg_task",
    "write_smallbaseline_cfg",
]

OPTIONAL_STEPS: frozenset[str] = frozenset({"google_earth", "hdfeos5"})
MEMORY_HEAVY_STEPS: frozenset[str] = frozenset(
    {"load_data", "invert_network", "correct_topography", "geocode"}
)

# Files MintPy reads from a topsStack work directory.
GEOMETRY_FILES: tuple[str, ...] = tuple(f"{layer}.rdr" for layer in GEOMETRY_LAYERS)
IFG_FILES: tuple[str, ...] = ("filt_fine.unw", "filt_fine.cor", "filt_fine.unw.conncomp")
_EXCLUDE_DATE_KEYS = ("mintpy.topographicResidual.excludeDate", "mintpy.timeFunc.excludeDate")
#: The smallest network MintPy's small-baseline workflow handles (with one interferogram its
#: modify_network step fails).
MIN_SBAS_DATES = 3
MIN_SBAS_PAIRS = 2
EXCLUDED_DIRNAME = "interferograms.excluded"
# In a pair's folder moved aside for an excluded date: the date(s), so it can come back.
_EXCLUDED_BY_DATE = ".excluded-dates"

# HDF5 files a step rewrites from scratch (relative to the MintPy work dir): after an
# interrupted or failed attempt they are removed even if they existed before it.
_REWRITTEN_BY_STEP: dict[str, tuple[str, ...]] = {
    "load_data": (
        "inputs/ifgramStack.h5",
        "inputs/geometry*.h5",
        "inputs/ionStack.h5",
        "inputs/offsetStack.h5",
    ),
    "invert_network": (
        "timeseries.h5",
        "temporalCoherence.h5",
        "numInvIfgram.h5",
        "timeseriesDecorStd.h5",
        "maskTempCoh.h5",
    ),
    "correct_topography": ("timeseries*_demErr.h5", "demErr.h5", "timeseriesResidual.h5"),
    "velocity": ("velocity*.h5",),
    "geocode": ("geo/*",),
}
_STATE_DIRNAME = ".insarflow"

ConfigValue = str | int | float | bool
#: Where MintPy's parallel steps run (see :func:`write_smallbaseline_cfg`).
ClusterKind = Literal["local", "slurm", "pbs", "scheduler"]

_PAIR_RE = re.compile(r"^(\d{8})_(\d{8})$")


# ----------------------------------------------------------------------------- steps
def mintpy_steps(*, google_earth: bool = False, hdfeos5: bool = False) -> list[str]:
    """smallbaselineApp steps to run, in order; the two export steps are opt-in."""
    wanted = {"google_earth": google_earth, "hdfeos5": hdfeos5}
    return [s for s in MINTPY_STEPS if s not in OPTIONAL_STEPS or wanted[s]]


# ------------------------------------------------------------------------------ cfg
def _default_template_path() -> Path:
    spec = find_spec("mintpy")
    if spec is None or spec.origin is None:  # pragma: no cover - mintpy is a dependency
        raise ModuleNotFoundError("mintpy is not installed; pip install mintpy")
    return Path(spec.origin).parent / "defaults" / "smallbaselineApp.cfg"


_KEY_LINE = re.compile(
    r"^(?P<key>mintpy\.[A-Za-z0-9_.]+)(?P<eq>\s*=\s*)(?P<value>\S*)(?P<rest>.*)$"
)


def valid_cfg_keys() -> list[str]:
    """Every option key of MintPy's default ``smallbaselineApp.cfg``."""
    text = _default_template_path().read_text(encoding="utf-8")
    return [m["key"] for line in text.splitlines() if (m := _KEY_LINE.match(line.strip()))]


def _cfg_value(key: str, value: ConfigValue) -> str:
    text = ("yes" if value else "no") if isinstance(value, bool) else str(value).strip()
    if not text or "#" in text or "\n" in text:
        raise ValueError(
            f"value {value!r} for {key} cannot be written to smallbaselineApp.cfg: it must be "
            "non-empty and contain no '#' or newline (MintPy cuts values at '#')"
        )
    return text


def _check_unknown(key: str, valid: Sequence[str]) -> None:
    if key in valid:
        return
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"unknown MintPy option {key!r} (not in MintPy's default smallbaselineApp.cfg){hint}"
    )


def _check_date(name: str, value: str) -> None:
    try:
        datetime.strptime(value, "%Y%m%d")
    except ValueError as exc:
        raise ValueError(
            f"{name}={value!r} is not a date; use YYYYMMDD (e.g. 20250101), 'auto' or 'no'"
        ) from exc


def write_smallbaseline_cfg(
    path: Path,
    *,
    stack_dir: Path,
    max_memory_gb: float = 4.0,
    num_workers: int = 1,
    cluster: ClusterKind = "local",
    reference_lat_lon: tuple[float, float] | None = None,
    reference_yx: tuple[int, int] | None = None,
    reference_date: str | None = None,
    unwrap_error_method: UnwrapErrorMethod = "no",
    troposphere_method: TroposphereMethod = "no",
    era5_credentials: bool = False,
    update_mode: bool = True,
    plot: bool = True,
    google_earth: bool = False,
    hdfeos5: bool = False,
    extra: Mapping[str, ConfigValue] | None = None,
) -> Path:
    """Write ``smallbaselineApp.cfg`` for a topsStack work directory; return its path.

    The file is MintPy's full default template with our values filled in, so MintPy
    never replaces it as obsolete. Paths are absolute. ``num_workers`` > 1 turns on a
    local Dask cluster for invert_network/correct_topography; 1 runs without one
    (a one-worker cluster only costs start-up time). ``cluster`` slurm or pbs: those steps
    run on ``num_workers`` batch jobs instead, configured by dask-jobqueue's settings of that
    kind (:func:`insarflow.compute.jobqueue_dask_env`). ``cluster`` scheduler: those steps
    run on the workers of the existing scheduler whose address the step's environment
    carries in ``INSARFLOW_DASK_SCHEDULER``, in as many chunks as they have threads when the
    step starts (:func:`insarflow.tasks.mintpy_runner.scheduler_cluster`); the file says
    ``local`` with ``numWorker = all``, which that patch turns into the scheduler
    (``num_workers`` is not used; plain smallbaselineApp would start a local cluster of all
    cores). ``reference_lat_lon`` or
    ``reference_yx`` fix the reference point, neither means MintPy picks one.
    ``reference_date`` is None or 'auto' (MintPy's date of least residual RMS), 'no'
    (the first date) or YYYYMMDD.

    Tropospheric correction defaults to 'no': 'pyaps' downloads ERA5 through the
    Copernicus CDS API and needs ``~/.cdsapirc``, so it is accepted only with
    ``era5_credentials=True``. ``extra`` passes further ``mintpy.*`` options through;
    a key MintPy does not know is an error naming the closest valid key. The file is
    rewritten (atomically) only when its content changes, so MintPy's up-to-date
    checks against the template keep holding across runs.
    """
    if Path(path).is_dir():
        raise ValueError(
            f"path {path} is a directory; give the config file's path, e.g. "
            f"{Path(path) / 'smallbaselineApp.cfg'}"
        )
    stack = Path(stack_dir).resolve()
    if not stack.is_dir():
        raise ValueError(f"stack_dir {stack} is not a directory; give the topsStack work dir")
    if "#" in str(stack) or "=" in str(stack):
        raise ValueError(
            f"stack_dir {stack} contains '#' or '=', which MintPy's template parser cannot "
            "read; move the stack to a path without them"
        )
    if not max_memory_gb > 0:
        raise ValueError(f"max_memory_gb={max_memory_gb} must be > 0 (GB of memory for MintPy)")
    if num_workers < 1:
        raise ValueError(f"num_workers={num_workers} must be >= 1")
    if reference_lat_lon is not None and reference_yx is not None:
        raise ValueError(
            f"reference_lat_lon={reference_lat_lon} and reference_yx={reference_yx} both given; "
            "give one of them, or neither for MintPy's automatic choice"
        )
    if reference_lat_lon is not None:
        lat, lon = reference_lat_lon
        if not (-90 <= lat <= 90 and -180 <= lon <= 360):
            raise ValueError(
                f"reference_lat_lon={reference_lat_lon} is not (lat, lon) in degrees; "
                "lat must be in [-90, 90] and lon in [-180, 360]"
            )
    if reference_yx is not None and (min(reference_yx) < 0 or len(reference_yx) != 2):
        raise ValueError(
            f"reference_yx={reference_yx} must be two non-negative pixel indices (y, x)"
        )
    if reference_date is None:
        reference_date = "auto"
    elif reference_date not in ("auto", "no"):
        _check_date("reference_date", reference_date)
    if unwrap_error_method not in get_args(UnwrapErrorMethod):
        raise ValueError(
            f"unwrap_error_method={unwrap_error_method!r}; use one of {get_args(UnwrapErrorMethod)}"
        )
    if troposphere_method not in get_args(TroposphereMethod):
        raise ValueError(
            f"troposphere_method={troposphere_method!r}; use one of {get_args(TroposphereMethod)}"
        )
    if troposphere_method == "pyaps" and not era5_credentials:
        raise ValueError(
            "troposphere_method='pyaps' downloads ERA5 through the Copernicus CDS API and needs "
            "credentials in ~/.cdsapirc; configure them and pass era5_credentials=True, or use "
            "troposphere_method='no' or 'height_correlation'"
        )

    if cluster not in get_args(ClusterKind):
        raise ValueError(f"cluster={cluster!r}; use one of {get_args(ClusterKind)}")
    if cluster == "scheduler":  # reached through MintPy's 'local' type, see the docstring
        mintpy_cluster, num_worker = "local", "all"
    else:
        mintpy_cluster = cluster if num_workers > 1 or cluster != "local" else "none"
        num_worker = str(num_workers)

    ifg_dir = stack / "merged" / "interferograms"
    geom = stack / "merged" / "geom_reference"
    values: dict[str, str] = {
        "mintpy.compute.maxMemory": f"{max_memory_gb:g}",
        "mintpy.compute.cluster": mintpy_cluster,
        "mintpy.compute.numWorker": num_worker,
        "mintpy.load.processor": "isce",
        "mintpy.load.updateMode": "yes" if update_mode else "no",
        "mintpy.load.metaFile": str(stack / "reference" / "IW*.xml"),
        "mintpy.load.baselineDir": str(stack / "baselines"),
        "mintpy.load.unwFile": str(ifg_dir / "*" / "filt_fine.unw"),
        "mintpy.load.corFile": str(ifg_dir / "*" / "filt_fine.cor"),
        "mintpy.load.connCompFile": str(ifg_dir / "*" / "filt_fine.unw.conncomp"),
        "mintpy.load.demFile": str(geom / "hgt.rdr"),
        "mintpy.load.lookupYFile": str(geom / "lat.rdr"),
        "mintpy.load.lookupXFile": str(geom / "lon.rdr"),
        "mintpy.load.incAngleFile": str(geom / "los.rdr"),
        "mintpy.load.azAngleFile": str(geom / "los.rdr"),
        "mintpy.load.shadowMaskFile": str(geom / "shadowMask.rdr"),
        "mintpy.reference.yx": (
            f"{reference_yx[0]},{reference_yx[1]}" if reference_yx is not None else "auto"
        ),
        "mintpy.reference.lalo": (
            f"{reference_lat_lon[0]},{reference_lat_lon[1]}"
            if reference_lat_lon is not None
            else "auto"
        ),
        "mintpy.reference.date": reference_date,
        "mintpy.unwrapError.method": unwrap_error_method,
        "mintpy.troposphericDelay.method": troposphere_method,
        "mintpy.plot": "yes" if plot else "no",
        "mintpy.save.kmz": "yes" if google_earth else "no",
        "mintpy.save.hdfEos5": "yes" if hdfeos5 else "no",
    }
    managed = set(values)
    # 'auto' (exclude_date.txt) is stored as "['exclude_date.txt']" in the outputs but read
    # back as [] when MintPy checks its update mode, so every rerun re-ran these steps and
    # all after them. 'no' means the same here (no such file) and reads back equal.
    values.update(dict.fromkeys(_EXCLUDE_DATE_KEYS, "no"))
    valid = valid_cfg_keys()
    for key, value in (extra or {}).items():
        _check_unknown(key, valid)
        if key in managed and key not in _EXCLUDE_DATE_KEYS:
            raise ValueError(
                f"MintPy option {key!r} is set by an argument of write_smallbaseline_cfg "
                "(paths, compute, reference, unwrapError, troposphere, plot, kmz, hdfEos5); "
                "pass it there instead of in extra"
            )
        values[key] = _cfg_value(key, value)

    template = _default_template_path().read_text(encoding="utf-8")
    written: set[str] = set()
    lines = []
    for line in template.splitlines():
        m = _KEY_LINE.match(line)
        if m and m["key"] in values:
            line = f"{m['key']}{m['eq']}{values[m['key']]}{m['rest']}"
            written.add(m["key"])
        lines.append(line)
    missing = sorted(set(values) - written)
    if missing:  # pragma: no cover - guarded by valid_cfg_keys and the key-set test
        raise ValueError(f"MintPy's default template has no line for {missing}")
    header = (
        "## smallbaselineApp.cfg written by insarflow (tasks.sbas.write_smallbaseline_cfg).\n"
        f"## topsStack work dir: {stack}\n"
    )
    out = Path(path).resolve()
    atomic.write_text(out, header + "\n".join(lines) + "\n", skip_unchanged=True)
    return out


# ------------------------------------------------------------------------ preflight
class PreflightError(RuntimeError):
    """The topsStack outputs are not ready for MintPy; the message lists what and why."""


@dataclass(frozen=True)
class PreflightReport:
    """What MintPy will load from a topsStack work directory."""

    stack_dir: Path
    meta_file: Path
    length: int
    width: int
    reference_date: str
    pairs: tuple[str, ...]
    dates: tuple[str, ...]
    excluded: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    dropped_dates: tuple[str, ...] = ()
    excluded_dir: Path | None = None

    def summary(self) -> str:
        text = (
            f"{len(self.pairs)} interferograms over {len(self.dates)} dates "
            f"({self.length} x {self.width} pixels), baseline reference {self.reference_date}"
        )
        if self.excluded:
            text += f"; {len(self.excluded)} excluded: " + ", ".join(sorted(self.excluded))
        if self.dropped_dates:
            text += "; dates left without any interferogram: " + ", ".join(self.dropped_dates)
        return text


def _raster_problem(path: Path, shape: tuple[int, int] | None) -> str | None:
    """Why ``path`` cannot be loaded, or None when it is complete and the right size."""
    name = path.name
    if not path.is_file():
        return f"{name} missing"
    try:
        info = read_isce_info(path)
    except FileNotFoundError:
        return f"{name}.xml missing"
    except ValueError as exc:
        return f"{name}.xml unreadable ({exc})"
    if not is_complete(path):
        return (
            f"{name} incomplete ({path.stat().st_size} bytes, its XML declares "
            f"{info.expected_bytes})"
        )
    if shape is not None and (info.length, info.width) != shape:
        return (
            f"{name} is {info.length} x {info.width} pixels but the geometry is "
            f"{shape[0]} x {shape[1]}"
        )
    return None


def _read_baselines(baseline_dir: Path) -> tuple[str, set[str], list[str]]:
    """(reference date, dates with a usable baseline, problems) as MintPy reads ``baselines/``."""
    files = sorted(baseline_dir.glob("*/*.txt"))
    if not files:
        return "", set(), [f"no baseline files ({baseline_dir}/*/*.txt)"]
    refs = [f.name.split("_")[0] for f in files]
    ref = Counter(refs).most_common(1)[0][0]
    dates = {ref}
    problems = []
    for f in files:
        parts = f.stem.split("_")
        if parts[0] != ref or len(parts) != 2:
            continue
        text = f.read_text(encoding="utf-8", errors="replace") if f.stat().st_size else ""
        values = baseline_values(text)
        if not values:
            problems.append(f"{f} has no 'Bperp (average)' line")
        elif not all(is_finite_number(v) for v in values):
            problems.append(
                f"{f} gives a non-finite perpendicular baseline ({', '.join(values)}): the "
                "orbits of its two dates are identical or do not cover the scene; fix the "
                "orbit files (inputs.orbit_dir) or exclude the date (acquisition.exclude_dates)"
            )
        else:
            dates.add(parts[1])
    return ref, dates, problems


def preflight_check(
    stack_dir: Path,
    *,
    allow_missing: bool,
    expected_pairs: Iterable[str] | None = None,
    exclude_dates: Collection[str] = (),
    ifg_files: Sequence[str] = IFG_FILES,
    geometry_files: Sequence[str] = GEOMETRY_FILES,
) -> PreflightReport:
    """Check that MintPy can load ``stack_dir``; exclude or reject incomplete interferograms.

    Fatal whatever ``allow_missing`` says: no ``reference/IW*.xml``, an incomplete
    geometry file, no baselines, no complete interferogram. A pair is incomplete when
    one of ``ifg_files`` is missing, smaller or larger than its XML declares, not the
    geometry's size, or one of its dates has no baseline; ``expected_pairs``
    (``YYYYMMDD_YYYYMMDD``) adds pairs that must exist. Without ``allow_missing``
    incomplete pairs raise :class:`PreflightError` listing them; with it, their
    directories are moved to ``merged/interferograms.excluded/`` (out of MintPy's
    ``merged/interferograms/*`` glob) and reported. Moving is idempotent: a pair
    excluded earlier stays listed until topsStack writes it again. Pairs with a date of
    ``exclude_dates`` (YYYYMMDD) are moved there too, whatever ``allow_missing`` says, and
    come back once their dates are no longer excluded.
    """
    stack = Path(stack_dir).resolve()
    if not stack.is_dir():
        raise PreflightError(f"topsStack work dir {stack} does not exist")
    fatal: list[str] = []
    try:
        meta_file = find_meta_file(stack)
        read_tops_product(meta_file)
    except MetadataError as exc:
        raise PreflightError(str(exc)) from exc

    geom_dir = stack / "merged" / "geom_reference"
    shape: tuple[int, int] | None = None
    for name in geometry_files:
        problem = _raster_problem(geom_dir / name, shape)
        if problem:
            fatal.append(f"merged/geom_reference/{problem}")
        elif shape is None:
            info = read_isce_info(geom_dir / name)
            shape = (info.length, info.width)
    ref_date, baseline_dates, baseline_problems = _read_baselines(stack / "baselines")
    if not ref_date:
        fatal.extend(baseline_problems)
    fatal.extend(p for p in baseline_problems if "non-finite" in p)
    if fatal:
        raise PreflightError(
            f"topsStack outputs in {stack} are not ready for MintPy:\n  - "
            + "\n  - ".join(fatal)
            + "\nre-run the topsStack steps that write them (geometry: merge_reference_"
            "secondary_slc; baselines: average_baseline)"
        )

    ifg_dir = stack / "merged" / "interferograms"
    excluded_dir = stack / "merged" / EXCLUDED_DIRNAME
    pairs = {p.name for p in ifg_dir.glob("*") if p.is_dir() and _PAIR_RE.match(p.name)}
    for pair in expected_pairs or ():
        if not _PAIR_RE.match(pair):
            raise ValueError(f"expected pair {pair!r} is not YYYYMMDD_YYYYMMDD")
        pairs.add(pair)

    left_out = set(exclude_dates)
    for old in sorted(excluded_dir.glob(f"*/{_EXCLUDED_BY_DATE}")):
        pair = old.parent.name
        if not set(pair.split("_")) & left_out and not (ifg_dir / pair).exists():
            old.unlink()
            old.parent.replace(ifg_dir / pair)
            pairs.add(pair)
    by_date = {p: tuple(sorted(set(p.split("_")) & left_out)) for p in pairs}
    by_date = {p: dates for p, dates in by_date.items() if dates}
    pairs -= set(by_date)

    problems: dict[str, list[str]] = {}
    for pair in sorted(pairs):
        reasons = [] if (ifg_dir / pair).is_dir() else ["directory missing"]
        if not reasons:
            for name in ifg_files:
                problem = _raster_problem(ifg_dir / pair / name, shape)
                if problem:
                    reasons.append(problem)
        for date in pair.split("_"):
            if date not in baseline_dates:
                reasons.append(
                    f"no baseline for {date} (baselines/{ref_date}_{date}/{ref_date}_{date}.txt)"
                )
        if reasons:
            problems[pair] = reasons

    if problems and not allow_missing:
        listing = "\n".join(f"  - {p}: {'; '.join(r)}" for p, r in sorted(problems.items()))
        raise PreflightError(
            f"{len(problems)} of {len(pairs)} interferograms in {ifg_dir} are not complete:\n"
            f"{listing}\nre-run their topsStack lines (merge_burst_igram, filter_coherence, "
            "unwrap), or allow missing interferograms to exclude them"
        )

    excluded: dict[str, tuple[str, ...]] = {}
    for pair, reasons in [
        *problems.items(),
        *((p, [f"{', '.join(d)} in acquisition.exclude_dates"]) for p, d in by_date.items()),
    ]:
        excluded[pair] = tuple(reasons)
        if (ifg_dir / pair).is_dir():
            excluded_dir.mkdir(parents=True, exist_ok=True)
            target = excluded_dir / pair
            if target.exists():
                shutil.rmtree(target)
            (ifg_dir / pair).replace(target)
            if pair in by_date:
                (target / _EXCLUDED_BY_DATE).write_text(", ".join(by_date[pair]) + "\n")
    if excluded_dir.is_dir():
        for old in excluded_dir.iterdir():
            if old.is_dir() and _PAIR_RE.match(old.name) and not (ifg_dir / old.name).exists():
                note = old / _EXCLUDED_BY_DATE
                reason = (
                    f"{note.read_text().strip()} in acquisition.exclude_dates"
                    if note.is_file()
                    else "excluded by an earlier check"
                )
                excluded.setdefault(old.name, (reason,))

    included = sorted(pairs - set(problems))
    dates = sorted({d for p in included for d in p.split("_")})
    if len(included) < MIN_SBAS_PAIRS or len(dates) < MIN_SBAS_DATES:
        raise PreflightError(
            f"{len(included)} complete interferogram(s) over {len(dates)} date(s) in "
            f"{ifg_dir}: a small-baseline time series needs at least {MIN_SBAS_DATES} dates "
            f"and {MIN_SBAS_PAIRS} interferograms; add acquisitions (widen acquisition.start"
            "..end) or run the topsStack stage through its unwrap step"
        )
    all_dates = {d for p in pairs | set(excluded) for d in p.split("_")}
    assert shape is not None
    return PreflightReport(
        stack_dir=stack,
        meta_file=meta_file,
        length=shape[0],
        width=shape[1],
        reference_date=ref_date,
        pairs=tuple(included),
        dates=tuple(dates),
        excluded=excluded,
        dropped_dates=tuple(sorted(all_dates - set(dates))),
        excluded_dir=excluded_dir if excluded else None,
    )


# ------------------------------------------------------------------------- metadata
@dataclass(frozen=True)
class MetadataReport:
    """Where the MintPy metadata for a stack was written."""

    data_rsc: Path
    rsc_files: tuple[Path, ...]
    command: CommandResult


def prepare_mintpy_metadata(
    stack_dir: Path,
    *,
    log_dir: Path,
    geometry_files: Sequence[str] = GEOMETRY_FILES,
    unw_name: str = "filt_fine.unw",
    env: Mapping[str, str] | None = None,
) -> MetadataReport:
    """Write the metadata MintPy's load_data needs, without ISCE2.

    ``reference/data.rsc`` comes from :func:`insarflow.tasks.sbas_metadata.write_data_rsc`; with it
    in place MintPy's ``prep_isce`` skips its ``isce``-based reader and writes the
    ``.rsc`` beside every geometry file and unwrapped interferogram (DATE12,
    P_BASELINE_TOP/BOTTOM_HDR). Run here as its own command, a failure is an error
    with a log instead of the warning load_data turns it into. Every ``.rsc`` is then
    checked for the keys MintPy needs. ``env`` adds environment variables.
    """
    stack = Path(stack_dir).resolve()
    geom_dir = stack / "merged" / "geom_reference"
    meta_file = find_meta_file(stack)
    data_rsc = write_data_rsc(meta_file, geom_dir)
    unw_pattern = str(stack / "merged" / "interferograms" / "*" / unw_name)
    args = [
        sys.executable,
        "-m",
        "mintpy.cli.prep_isce",
        "-m",
        str(meta_file),
        "-g",
        str(geom_dir),
        "-b",
        str(stack / "baselines"),
        "-f",
        unw_pattern,
        "--geom-files",
        *geometry_files,
    ]
    result = run_command(
        args,
        log_path=Path(log_dir) / "mintpy" / "prep_isce.log",
        cwd=stack,
        env=_mintpy_env(env),
    )
    unw_files = sorted((stack / "merged" / "interferograms").glob(f"*/{unw_name}"))
    geom_paths = [geom_dir / n for n in geometry_files if (geom_dir / n).is_file()]
    problems = []
    rsc_files = []
    for data, extra_keys in [(p, ("DATE12", "P_BASELINE_TOP_HDR")) for p in unw_files] + [
        (p, ()) for p in geom_paths
    ]:
        rsc = Path(f"{data}.rsc")
        if not rsc.is_file():
            problems.append(f"{rsc} was not written")
            continue
        keys = read_rsc(rsc)
        missing = [k for k in (*REQUIRED_KEYS, *extra_keys) if k not in keys]
        if missing:
            problems.append(f"{rsc} lacks {', '.join(missing)}")
        rsc_files.append(rsc)
    if problems:
        raise MetadataError(
            "MintPy metadata incomplete after prep_isce (log: "
            f"{result.log_path}):\n  - " + "\n  - ".join(problems)
        )
    return MetadataReport(data_rsc=data_rsc, rsc_files=tuple(rsc_files), command=result)


# ---------------------------------------------------------------------- step running
# smallbaselineApp.py with this project's MintPy patches (see insarflow.tasks.mintpy_runner).
_MINTPY_RUNNER = (sys.executable, "-m", "insarflow.tasks.mintpy_runner")


def _mintpy_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("MPLBACKEND", "Agg")  # no display on workers
    # The child runs the patches of this very insarflow, wherever it was imported from.
    root = str(Path(insarflow.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


def _snapshot(work_dir: Path) -> dict[str, list[int]]:
    state = {}
    for root, dirs, files in os.walk(work_dir):
        dirs[:] = [d for d in dirs if d != _STATE_DIRNAME]
        for name in files:
            p = Path(root) / name
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            state[str(p.relative_to(work_dir))] = [st.st_mtime_ns, st.st_size]
    return state


def _remove_attempt_outputs(
    step: str, work_dir: Path, before: Mapping[str, Sequence[int]], keep: Sequence[Path]
) -> list[Path]:
    """Delete what an interrupted/failed attempt of ``step`` created or rewrote.

    Paths equal to or under an entry of ``keep`` (the config, the log directory) stay.
    """
    patterns = _REWRITTEN_BY_STEP.get(step, ())
    removed = []
    for rel, stat in _snapshot(work_dir).items():
        path = work_dir / rel
        resolved = path.resolve()
        if any(resolved == k or resolved.is_relative_to(k) for k in keep):
            continue
        created = rel not in before
        rewritten = not created and list(before[rel]) != list(stat)
        if created or (rewritten and any(Path(rel).match(p) for p in patterns)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def run_mintpy_step(
    step: str,
    cfg_path: Path,
    work_dir: Path,
    log_dir: Path,
    *,
    timeout_s: float | None = None,
    env: Mapping[str, str] | None = None,
    history_file: Path | None = None,
    run_id: str = "",
) -> CommandResult:
    """Run ``smallbaselineApp.py <cfg> --dir <work_dir> --dostep <step>``.

    With ``history_file`` the step's duration (and failure) is appended there as a
    ``mintpy`` stage record of run ``run_id`` (see :mod:`insarflow.tasks.report`).

    The log goes to ``<log_dir>/mintpy/<step>.log``. MintPy skips work whose outputs
    are up to date. A marker in ``<work_dir>/.insarflow/`` records the files present
    before the step; if it is still there at the next attempt (the process was killed)
    or the step fails, the files the attempt created, and those it rewrites wholesale,
    are removed first so MintPy cannot mistake them for finished outputs. ``env`` adds
    environment variables (e.g. ``OMP_NUM_THREADS``).
    """
    if step not in MINTPY_STEPS:
        close = difflib.get_close_matches(step, MINTPY_STEPS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown MintPy step {step!r}{hint} (steps: {', '.join(MINTPY_STEPS)})")
    cfg = Path(cfg_path).resolve()
    if not cfg.is_file():
        raise FileNotFoundError(
            f"MintPy config {cfg} not found; write it with write_smallbaseline_cfg"
        )
    work = Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_dir) / "mintpy" / f"{step}.log"
    keep = [cfg, Path(log_dir).resolve()]
    marker = work / _STATE_DIRNAME / f"{step}.running.json"
    if marker.is_file():
        before = json.loads(marker.read_text(encoding="utf-8"))
        _remove_attempt_outputs(step, work, before, keep)
        marker.unlink()
    atomic.write_text(marker, json.dumps(_snapshot(work)), skip_unchanged=True)
    before = json.loads(marker.read_text(encoding="utf-8"))
    args = [
        *_MINTPY_RUNNER,
        str(cfg),
        "--dir",
        str(work),
        "--dostep",
        step,
    ]
    started = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        result = run_command(
            args, log_path=log_path, cwd=work, env=_mintpy_env(env), timeout_s=timeout_s
        )
    except CommandError as exc:
        _remove_attempt_outputs(step, work, before, keep)
        marker.unlink(missing_ok=True)
        _record_step(history_file, run_id, started, step, exc.result.duration_s, failed=True)
        raise
    marker.unlink(missing_ok=True)
    _record_step(history_file, run_id, started, step, result.duration_s, failed=False)
    return result


def _record_step(
    history_file: Path | None,
    run_id: str,
    started: str,
    step: str,
    duration_s: float,
    *,
    failed: bool,
) -> None:
    if history_file is None:
        return
    from insarflow.tasks.report import StageRecord, StepSummary, append_stage_record

    summary = StepSummary(
        name=step, run=int(not failed), failed=int(failed), duration_s=round(duration_s, 2)
    )
    append_stage_record(history_file, StageRecord(run_id, "mintpy", started, [summary]))


def _plot_inputs(work: Path) -> str:
    """Fingerprint of what MintPy's plot step draws: its HDF5 files and the template."""
    files = sorted([*work.glob("*.h5"), *work.glob("*/*.h5"), work / "smallbaselineApp.cfg"])
    return json.dumps(
        [[str(f.relative_to(work)), f.stat().st_mtime_ns, f.stat().st_size] for f in files]
    )


def plot_mintpy_results(
    work_dir: Path,
    log_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    history_file: Path | None = None,
    run_id: str = "",
) -> CommandResult | None:
    """MintPy's own figures in ``<work_dir>/pic``, as a full ``smallbaselineApp.py`` run
    leaves them with ``mintpy.plot = yes`` (``smallbaselineApp.py --plot`` in the work
    directory). Skipped (None) when nothing it draws changed since the last plot.
    """
    work = Path(work_dir).resolve()
    if not (work / "smallbaselineApp.cfg").is_file():
        raise FileNotFoundError(
            f"{work / 'smallbaselineApp.cfg'} not found; run the MintPy steps first"
        )
    marker = work / _STATE_DIRNAME / "plot.done"
    inputs = _plot_inputs(work)
    if marker.is_file() and marker.read_text(encoding="utf-8") == inputs:
        return None
    started = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        result = run_command(
            [*_MINTPY_RUNNER, "--plot"],
            log_path=Path(log_dir) / "mintpy" / "plot.log",
            cwd=work,
            env=_mintpy_env(env),
        )
    except CommandError as exc:
        _record_step(history_file, run_id, started, "plot", exc.result.duration_s, failed=True)
        raise
    atomic.write_text(marker, inputs, skip_unchanged=True)
    _record_step(history_file, run_id, started, "plot", result.duration_s, failed=False)
    return result


def inversion_stamp(work_dir: Path) -> int | None:
    """When MintPy last wrote ``<work_dir>/timeseries.h5`` (ns); None before any inversion."""
    series = Path(work_dir) / "timeseries.h5"
    return series.stat().st_mtime_ns if series.is_file() else None


def reinversion_note(work_dir: Path, before: int | None, network: PreflightReport) -> str | None:
    """What an update's artifact says when MintPy inverted an existing network again (the
    time series was there at ``before`` and has been rewritten since); else None."""
    if before is None or inversion_stamp(work_dir) == before:
        return None
    # MintPy's ifgram_inversion has no partial mode: a changed network changes every date.
    return (
        f"whole network inverted again ({len(network.pairs)} interferograms, "
        f"{len(network.dates)} dates): MintPy's inversion solves each pixel over all pairs, "
        "so a changed network changes every date"
    )


# -------------------------------------------------------------------------- outputs
@dataclass(frozen=True)
class SbasOutputs:
    """The products of a finished MintPy run."""

    work_dir: Path
    timeseries: Path
    velocity: Path
    temporal_coherence: Path
    mask: Path
    geometry: Path
    geo_dir: Path | None


def sbas_outputs(work_dir: Path, cfg_path: Path | None = None) -> SbasOutputs:
    """Locate the final time series (after the enabled corrections), velocity and masks.

    The corrections in effect are read from ``<work_dir>/smallbaselineApp.cfg`` (the
    template MintPy keeps there), else from ``cfg_path``.
    """
    from mintpy.smallbaselineApp import TimeSeriesAnalysis
    from mintpy.utils import readfile
    from mintpy.utils import utils as ut

    work = Path(work_dir).resolve()
    merged_cfg = work / "smallbaselineApp.cfg"
    if not merged_cfg.is_file() and cfg_path is None:
        raise FileNotFoundError(f"{merged_cfg} not found; pass cfg_path")
    template = readfile.read_template(str(merged_cfg if merged_cfg.is_file() else cfg_path))
    template = ut.check_template_auto_value(template)
    required = [work / "timeseries.h5", work / "velocity.h5", work / "temporalCoherence.h5"]
    missing = [str(p) for p in required if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"MintPy outputs missing: {', '.join(missing)}; run the MintPy steps through velocity"
        )
    names = TimeSeriesAnalysis.get_timeseries_filename(template, str(work))
    geo_dir = work / "geo"
    return SbasOutputs(
        work_dir=work,
        timeseries=Path(names["velocity"]["input"]),
        velocity=work / "velocity.h5",
        temporal_coherence=work / "temporalCoherence.h5",
        mask=work / "maskTempCoh.h5",
        geometry=work / "inputs" / "geometryRadar.h5",
        geo_dir=geo_dir if geo_dir.is_dir() else None,
    )


# ----------------------------------------------------------------------- Prefect tasks
preflight_task = task(name="sbas-preflight", cache_policy=NO_CACHE)(preflight_check)
prepare_metadata_task = task(name="sbas-metadata", cache_policy=NO_CACHE, tags={"mintpy"})(
    prepare_mintpy_metadata
)
write_cfg_task = task(name="sbas-write-cfg", cache_policy=NO_CACHE)(write_smallbaseline_cfg)
plot_task = task(name="mintpy-plot", cache_policy=NO_CACHE, tags={"mintpy"})(plot_mintpy_results)
mintpy_step_task = task(name="mintpy-step", cache_policy=NO_CACHE, tags={"mintpy"})(run_mintpy_step)


def _step_tags(step: str) -> set[str]:
    tags = {"mintpy", f"mintpy-{step}"}
    if step in MEMORY_HEAVY_STEPS:
        tags.add("memory-heavy")
    return tags


# One task per smallbaselineApp step: its own name in the UI and its own tags, so
# concurrency limits can hold the memory-heavy ones.
MINTPY_STEP_TASKS = {
    step: mintpy_step_task.with_options(
        name=f"mintpy-{step}", task_run_name=f"mintpy-{step}", tags=_step_tags(step)
    )
    for step in MINTPY_STEPS
}
