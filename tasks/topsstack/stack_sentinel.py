"""Build and run the ISCE2 ``stackSentinel.py`` command that writes run files and configs.

``stackSentinel.py`` only writes ``configs/`` and ``run_files/`` (plus
``SAFE_files.txt`` into its *current directory*); the lines are then scheduled one by
one from the parsed run files, so ``--num_proc`` is never passed. Flag names follow
ISCE2's ``contrib/stack/topsStack/stackSentinel.py`` argument parser.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal

from prefect import task

from insarflow import atomic
from insarflow.tasks.isce2_env import STACK_SENTINEL
from insarflow.tasks.shell import CommandResult, run_command

#: Written (atomically) once stackSentinel.py finished: its run files and configs are complete.
RUN_FILES_MARKER = Path(".insarflow") / "run_files.done.json"

Coregistration = Literal["geometry", "NESD"]
Workflow = Literal["interferogram"]

_DATE_RE = re.compile(r"^\d{8}$")


def _yyyymmdd(value: date | str, field: str) -> str:
    """``value`` as ``YYYYMMDD``; ``field`` names it in the error."""
    if isinstance(value, date):
        return value.strftime("%Y%m%d")
    text = value.replace("-", "")
    if not _DATE_RE.match(text):
        raise ValueError(f"{field}={value!r} is not a date; write it as YYYY-MM-DD or YYYYMMDD")
    try:
        datetime.strptime(text, "%Y%m%d")
    except ValueError as exc:
        raise ValueError(f"{field}={value!r} is not a valid calendar date") from exc
    return text


def _iso(value: date | str, field: str) -> str:
    """``value`` as ``YYYY-MM-DD``, the format ``--start_date/--stop_date`` expect."""
    text = _yyyymmdd(value, field)
    return f"{text[:4]}-{text[4:6]}-{text[6:]}"


def _num(value: float) -> str:
    """Shortest text that reads back as the same float (``34.0``, ``117.95``)."""
    return repr(float(value))


def build_stack_sentinel_args(
    *,
    slc_dir: Path,
    work_dir: Path,
    orbit_dir: Path,
    aux_dir: Path,
    dem_path: Path,
    swaths: Sequence[int],
    bbox: tuple[float, float, float, float],
    connections: int | Literal["all"],
    azimuth_looks: int,
    range_looks: int,
    filter_strength: float,
    coregistration: Coregistration,
    workflow: Workflow = "interferogram",
    polarization: str = "vv",
    use_gpu: bool = False,
    reference_date: date | str | None = None,
    num_overlap_connections: int = 3,
    esd_coherence_threshold: float = 0.85,
    ion_param_file: Path | None = None,
    start_date: date | str | None = None,
    stop_date: date | str | None = None,
    exclude_dates: Sequence[date | str] = (),
    program: str | Path = STACK_SENTINEL,
) -> list[str]:
    """The exact ``stackSentinel.py`` argv (list arguments, never a shell string).

    ``bbox`` is (south, north, west, east). Paths are made absolute because the
    command runs with the stack directory as its working directory. ``-O`` and ``-e``
    are only written for NESD coregistration, where they apply.
    """
    south, north, west, east = bbox
    for name, lat in (("bbox south", south), ("bbox north", north)):
        if not -90.0 <= lat <= 90.0:
            raise ValueError(f"{name}={lat} is outside [-90, 90]; bbox is S N W E")
    for name, lon in (("bbox west", west), ("bbox east", east)):
        if not -180.0 <= lon <= 180.0:
            raise ValueError(f"{name}={lon} is outside [-180, 180]; bbox is S N W E")
    if south >= north:
        raise ValueError(
            f"bbox={list(bbox)} has south >= north; give it as S N W E (south < north)"
        )
    if not swaths or not set(swaths) <= {1, 2, 3}:
        raise ValueError(f"swaths={list(swaths)} must be a non-empty subset of 1, 2, 3")
    if connections != "all" and (not isinstance(connections, int) or connections < 1):
        raise ValueError(f"connections={connections!r} must be an integer >= 1 or 'all'")
    for name, looks in (("azimuth_looks", azimuth_looks), ("range_looks", range_looks)):
        if looks < 1:
            raise ValueError(f"{name}={looks} must be >= 1")
    if not 0.0 <= filter_strength <= 1.0:
        raise ValueError(f"filter_strength={filter_strength} must be within [0, 1]")
    if coregistration not in ("geometry", "NESD"):
        raise ValueError(f"coregistration={coregistration!r} must be 'geometry' or 'NESD'")
    if workflow != "interferogram":
        raise ValueError(f"workflow={workflow!r} is not supported; use 'interferogram'")
    if num_overlap_connections < 1:
        raise ValueError(f"num_overlap_connections={num_overlap_connections} must be >= 1")
    if not 0.0 <= esd_coherence_threshold <= 1.0:
        raise ValueError(f"esd_coherence_threshold={esd_coherence_threshold} must be within [0, 1]")

    args = [
        str(program),
        "-s", str(Path(slc_dir).absolute()),
        "-w", str(Path(work_dir).absolute()),
        "-o", str(Path(orbit_dir).absolute()),
        "-a", str(Path(aux_dir).absolute()),
        "-d", str(Path(dem_path).absolute()),
        "-n", " ".join(str(s) for s in sorted(set(swaths))),
        "-b", " ".join(_num(v) for v in (south, north, west, east)),
        "-c", str(connections),
        "-z", str(azimuth_looks),
        "-r", str(range_looks),
        "-f", _num(filter_strength),
        "-C", coregistration,
        "-W", workflow,
        "-p", polarization,
    ]  # fmt: skip
    if reference_date is not None:
        args += ["-m", _yyyymmdd(reference_date, "reference_date")]
    if coregistration == "NESD":
        args += ["-O", str(num_overlap_connections), "-e", _num(esd_coherence_threshold)]
    if use_gpu:
        args.append("--useGPU")
    if ion_param_file is not None:
        args += ["--param_ion", str(Path(ion_param_file).absolute())]
    start = None if start_date is None else _iso(start_date, "start_date")
    stop = None if stop_date is None else _iso(stop_date, "stop_date")
    if start is not None and stop is not None and start >= stop:
        raise ValueError(f"start_date={start} must be before stop_date={stop}")
    if start is not None:
        args += ["--start_date", start]
    if stop is not None:
        args += ["--stop_date", stop]
    if exclude_dates:
        args += ["-x", ",".join(_yyyymmdd(d, "exclude_dates") for d in exclude_dates)]
    return args


def prepare_stack_dir(stack_dir: Path) -> Path | None:
    """Move an old ``run_files/`` (and ``configs/``) aside so stackSentinel can run.

    stackSentinel refuses to run when ``run_files/`` exists. Nothing is deleted: both
    folders move to ``stack_dir/archive/<UTC timestamp>/``, whose path is returned
    (``None`` when there was no ``run_files/``).
    """
    run_files = stack_dir / "run_files"
    if not run_files.exists():
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    archive = stack_dir / "archive" / stamp
    suffix = 1
    while archive.exists():
        archive = stack_dir / "archive" / f"{stamp}-{suffix}"
        suffix += 1
    archive.mkdir(parents=True)
    run_files.rename(archive / "run_files")
    configs = stack_dir / "configs"
    if configs.exists():
        configs.rename(archive / "configs")
    return archive


def is_update_mode(stack_dir: Path) -> bool:
    """Whether stackSentinel will update an existing stack (``coreg_secondarys/`` exists).

    ISCE2 switches on the folder's existence alone; an empty ``coreg_secondarys/``
    makes it fail asking for SAFE files of coregistered dates.
    """
    return (stack_dir / "coreg_secondarys").exists()


def update_mode_required_dates(
    existing_dates: Sequence[str], num_overlap_connections: int
) -> list[str]:
    """Coregistered dates whose SAFE zips must still be in the SLC folder for an update.

    With NESD coregistration stackSentinel re-processes the last
    ``2 x num_overlap_connections`` coregistered dates, and stops if their SAFEs are gone.
    """
    if num_overlap_connections < 1:
        raise ValueError(f"num_overlap_connections={num_overlap_connections} must be >= 1")
    dates = sorted(set(existing_dates))
    for value in dates:
        _yyyymmdd(value, "existing_dates")
    return dates[-2 * num_overlap_connections :]


def run_stack_sentinel(
    args: Sequence[str],
    *,
    stack_dir: Path,
    log_path: Path,
    extra_path: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
) -> CommandResult:
    """Run ``stackSentinel.py`` with ``stack_dir`` as working directory.

    Raises ``ValueError`` when ``args`` ask for ``--num_proc`` or when ``run_files/``
    already exists (call :func:`prepare_stack_dir` first); a failing run raises
    ``insarflow.tasks.shell.CommandError``.
    """
    if any(a.split("=", 1)[0] in ("--num_proc", "--num_process") for a in args):
        raise ValueError(
            "stackSentinel.py must not get --num_proc: every run-file line is scheduled "
            "as its own task; drop the flag"
        )
    if (stack_dir / "run_files").exists():
        raise ValueError(
            f"{stack_dir / 'run_files'} exists and stackSentinel.py would refuse to run; "
            "call prepare_stack_dir() to archive it first"
        )
    stack_dir.mkdir(parents=True, exist_ok=True)
    marker = stack_dir / RUN_FILES_MARKER
    marker.unlink(missing_ok=True)
    result = run_command(args, log_path=log_path, cwd=stack_dir, extra_path=extra_path, env=env)
    # stackSentinel writes run files one by one: only a finished run makes them a stack.
    atomic.write_text(marker, json.dumps({"args": list(args)}, indent=1) + "\n")
    return result


class SafeFileError(ValueError):
    """A SAFE zip that cannot be read; the message names it and the fix."""


def check_safe_files(safe_files: Sequence[Path]) -> None:
    """Raise :class:`SafeFileError` naming every SAFE zip that is not a readable zip file.

    stackSentinel.py opens each zip and stops with a bare ``BadZipFile`` traceback that
    names no file; a zip cut short (a copy or download that died) has no central directory.
    Only the directory is read here, not the data.
    """
    bad = []
    for path in safe_files:
        if Path(path).suffix != ".zip":
            continue
        try:
            with zipfile.ZipFile(path) as zf:
                zf.namelist()
        except (OSError, zipfile.BadZipFile) as exc:
            size = Path(path).stat().st_size if Path(path).is_file() else 0
            bad.append(f"{path} ({size} bytes): {exc}")
    if bad:
        raise SafeFileError(
            f"{len(bad)} SAFE zip(s) cannot be read (truncated or corrupt):\n  "
            + "\n  ".join(bad)
            + "\ndelete them and run again: the acquire stage downloads them anew"
        )


def run_files_complete(stack_dir: Path) -> bool:
    """True when ``run_files/`` exists and was written by a stackSentinel.py run that finished.

    A run killed (or failed) halfway leaves some run files: they must be archived and
    written again, never executed as if they were the whole stack.
    """
    return (stack_dir / "run_files").is_dir() and (stack_dir / RUN_FILES_MARKER).is_file()


@task(name="stack-sentinel")
def stack_sentinel_task(
    args: list[str], stack_dir: Path, log_path: Path, extra_path: list[Path] | None = None
) -> CommandResult:
    """Prefect task: archive old run files, then write new ones with stackSentinel.py."""
    prepare_stack_dir(stack_dir)
    return run_stack_sentinel(
        args, stack_dir=stack_dir, log_path=log_path, extra_path=extra_path or ()
    )
