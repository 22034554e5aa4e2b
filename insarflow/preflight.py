"""Pre-flight: everything about a run that can be known before any download or processing.

``insarflow validate``, ``insarflow plan`` and the start of every run call
:func:`preflight` (inputs, credentials, the ISCE2 environment, the network's size); it
reports every problem at once, each naming the field or file, the value and the fix, and
touches nothing on disk. :func:`environment_issues` checks the credentials of a
configuration that failed validation, so that those problems are reported with it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from insarflow.config import STAGES, ConfigError, ConfigIssue, StackConfig

IssueSink = Callable[[str, object, str], None]
#: Two satellites on one track (S1A with S1B until 2021, with S1C since 2025).
SHORTEST_REVISIT_DAYS = 6


@dataclass
class PreflightReport:
    """What the pre-flight learned: known dates, the ISCE2 found, and the problems."""

    dates: list[str] | None = None  # None: only known after the search
    isce2_version: str | None = None
    bursts: int | None = None  # over all swaths, counted in the SAFE zips on disk
    issues: list[ConfigIssue] = field(default_factory=list)

    def raise_for_issues(self, source: str) -> None:
        if self.issues:
            raise ConfigError(source, self.issues)


def scenes_on_disk(config: StackConfig) -> dict[str, list[Path]]:
    """The SAFE zips of ``inputs.slc_dir`` that belong to the stack, by date."""
    from insarflow.tasks.inputs import local_scenes

    acq = config.acquisition
    assert config.inputs.slc_dir is not None
    return local_scenes(
        config.inputs.slc_dir,
        track=acq.track,
        start=acq.start,
        end=acq.end,
        platforms=acq.platforms,
        exclude_dates=acq.exclude_dates,
    )


def known_dates(config: StackConfig) -> list[str] | None:
    """The stack's dates when they can be known without a network: simulator or offline inputs."""
    if config.engine == "simulator":
        from insarflow.plan import expected_dates

        return expected_dates(config)[0]
    inputs = config.inputs
    if inputs.slc_dir is None or inputs.download_missing or not inputs.slc_dir.is_dir():
        return None
    return sorted(scenes_on_disk(config))


def preflight(
    config: StackConfig, stages: Sequence[str] = STAGES, *, log_dir: Path | None = None
) -> PreflightReport:
    """Check inputs, the ISCE2 environment and the network size for ``stages``."""
    from insarflow.plan import sequential_pairs
    from insarflow.tasks.sbas import MIN_SBAS_DATES, MIN_SBAS_PAIRS

    report = PreflightReport()
    issues = report.issues
    inputs = config.inputs
    real = config.engine == "isce2"

    def issue(field_name: str, value: object, message: str) -> None:
        issues.append(ConfigIssue(field=field_name, value=value, message=message))

    if real and "acquire" in stages:
        for name, folder in (
            ("inputs.slc_dir", inputs.slc_dir),
            ("inputs.orbit_dir", inputs.orbit_dir),
        ):
            if folder is not None and not folder.is_dir():
                issue(
                    name, str(folder), "is not a folder; give an existing folder or remove the key"
                )
        if inputs.dem is not None:
            _check_dem(config, issue)
        if not inputs.download_missing and inputs.slc_dir is None:
            issue(
                "inputs.download_missing",
                False,
                "downloads are off but inputs.slc_dir is empty: give the folder of SAFE zips "
                "or set download_missing: true",
            )

    if real and "acquire" in stages and inputs.download_missing:
        # Needed for sure only when nothing is on disk; a broken source is a trap anyway.
        issues.extend(
            credential_issues(
                config.acquisition.credentials_secret_block, required=inputs.slc_dir is None
            )
        )

    if real and ("topsstack" in stages or _needs_isce2_dem(config, stages)):
        version, found = isce2_issues(config.isce2.env_script, log_dir)
        report.isce2_version = version
        issues.extend(found)

    jq = config.compute.jobqueue
    if jq is not None and ("topsstack" in stages or "sbas" in stages):
        from insarflow.compute import jobqueue_issues

        for field_name, value, message in jobqueue_issues(jq):
            issue(field_name, value, message)

    if "sbas" in stages and config.mintpy.troposphere == "pyaps":
        cdsapirc = Path.home() / ".cdsapirc"
        if not cdsapirc.is_file():
            issue(
                "mintpy.troposphere",
                "pyaps",
                f"pyaps downloads ERA5 through the Copernicus CDS API, and {cdsapirc} (its key) "
                "does not exist: create it, or set mintpy.troposphere to 'no' or "
                "'height_correlation'",
            )

    try:
        report.dates = known_dates(config)
    except ValueError as exc:
        issue("inputs.slc_dir", str(inputs.slc_dir), str(exc))
    dates = report.dates
    if dates is not None and "sbas" in stages:
        pairs = sequential_pairs(dates, config.topsstack.connections)
        if len(dates) < MIN_SBAS_DATES or len(pairs) < MIN_SBAS_PAIRS:
            where = f"in {inputs.slc_dir}" if real else "(simulator.dates)"
            issue(
                "acquisition",
                f"{len(dates)} date(s), {len(pairs)} interferogram(s)",
                f"{len(dates)} acquisition date(s) {where} give {len(pairs)} interferogram(s); a "
                f"small-baseline time series needs at least {MIN_SBAS_DATES} dates and "
                f"{MIN_SBAS_PAIRS} interferograms: widen acquisition.start..end, add SAFE zips "
                "or raise topsstack.connections (or stop earlier with --until topsstack)",
            )
    elif dates is None and "sbas" in stages:
        # Dates only known after the search; a window too short for any revisit is not.
        acq = config.acquisition
        span = (acq.last_date() - acq.start).days
        needed = (MIN_SBAS_DATES - 1) * SHORTEST_REVISIT_DAYS
        if span < needed:
            issue(
                "acquisition.end",
                str(acq.end),
                f"{acq.start}..{acq.last_date()} spans {span} day(s): Sentinel-1 revisits a "
                f"track every {SHORTEST_REVISIT_DAYS} days at best, so it holds fewer than "
                f"the {MIN_SBAS_DATES} dates a small-baseline time series needs; widen the "
                f"window to at least {needed} days (or stop earlier with --until topsstack)",
            )
    if real and dates and inputs.orbit_dir is not None and not inputs.download_missing:
        _check_orbits(config, issue)
    if real and dates and "topsstack" in stages:
        report.bursts = _check_bursts(config, issue)
    return report


def _check_bursts(config: StackConfig, issue: IssueSink) -> int | None:
    """The area covers at least 2 bursts of every swath of the reference date's SAFE zips;
    the bursts it covers over all swaths (None when they cannot be counted)."""
    import zipfile

    from insarflow.tasks.bursts import SingleBurstError, check_area_bursts, reference_scenes

    ts = config.topsstack
    scenes = [f for files in scenes_on_disk(config).values() for f in files]
    reference = ts.reference_date.strftime("%Y%m%d") if ts.reference_date else None
    area, field_name = config.area.snwe(), config.area.field_name()
    try:
        counts = check_area_bursts(
            reference_scenes(scenes, reference),
            ts.swaths,
            config.acquisition.polarization,
            area,
            field=field_name,
        )
    except SingleBurstError as exc:
        issue(field_name, list(area), str(exc))
    except (zipfile.BadZipFile, OSError, ValueError):
        pass  # an unreadable SAFE zip is named by the topsStack stage's own check
    else:
        return sum(counts.values()) or None
    return None


def _needs_isce2_dem(config: StackConfig, stages: Sequence[str]) -> bool:
    return (
        "acquire" in stages
        and config.inputs.dem is None
        and config.acquisition.dem_source == "isce2"
    )


def _check_dem(config: StackConfig, issue: IssueSink) -> None:
    """The user's DEM exists, reads and covers the area (nothing is converted here)."""
    from insarflow.tasks.dem import DemError, read_dem_info

    dem = config.inputs.dem
    assert dem is not None
    if not dem.is_file():
        issue("inputs.dem", str(dem), "does not exist; give an ISCE2 DEM (.dem.wgs84) or a GeoTIFF")
        return
    south, north, west, east = config.area.snwe()
    if dem.suffix.lower() in (".tif", ".tiff"):
        import rasterio

        try:
            with rasterio.open(dem) as src:
                left, bottom, right, top = src.bounds
        except rasterio.errors.RasterioIOError as exc:
            issue("inputs.dem", str(dem), f"cannot be read as a GeoTIFF ({exc})")
            return
        s, n, w, e = bottom, top, left, right
    else:
        try:
            s, n, w, e = read_dem_info(dem).snwe
        except DemError as exc:
            issue("inputs.dem", str(dem), f"is not a usable ISCE2 DEM: {exc}")
            return
    if not (s <= south and n >= north and w <= west and e >= east):
        issue(
            "inputs.dem",
            str(dem),
            f"spans S{s:.4f} N{n:.4f} W{w:.4f} E{e:.4f}, which does not cover the area (S N W E) "
            f"{[south, north, west, east]}; give a DEM covering it with a margin, or remove "
            "inputs.dem to have one made",
        )


def _check_orbits(config: StackConfig, issue: IssueSink) -> None:
    """Offline: every date has a local orbit file (precise or restituted) covering it."""
    from datetime import timedelta

    from insarflow.tasks.orbits import parse_orbit_name, parse_safe_name

    inputs = config.inputs
    assert inputs.slc_dir is not None and inputs.orbit_dir is not None
    if not inputs.orbit_dir.is_dir():
        return  # reported above
    local = scenes_on_disk(config)
    scenes = [parse_safe_name(f) for files in local.values() for f in files]
    folders = [f for f in (inputs.orbit_dir, config.paths.orbits) if f.is_dir()]
    orbits = [o for f in folders for p in f.glob("*.EOF") if (o := parse_orbit_name(p))]
    margin = timedelta(seconds=60)
    uncovered = sorted({s.date for s in scenes if not any(o.covers(s, margin) for o in orbits)})
    if uncovered:
        issue(
            "inputs.orbit_dir",
            str(inputs.orbit_dir),
            f"no orbit file covers the acquisitions of {', '.join(uncovered)}; put their "
            "precise (POEORB) or restituted (RESORB) .EOF files there, or set "
            "inputs.download_missing: true to fetch them",
        )


def isce2_issues(
    env_script: Path | None, log_dir: Path | None = None
) -> tuple[str | None, list[ConfigIssue]]:
    """ISCE2's version, or the problem with its environment (see insarflow.tasks.isce2_env)."""
    from insarflow.tasks.isce2_env import IsceNotFoundError, probe_isce2

    with tempfile.TemporaryDirectory(prefix="insarflow-preflight-") as tmp:
        # validate/plan write nothing into the work directory; a run keeps the log.
        log = Path(log_dir or tmp) / "isce2-env.log"
        try:
            return probe_isce2(env_script, log_path=log).version, []
        except IsceNotFoundError as exc:
            issue = ConfigIssue(
                field="isce2.env_script", value=str(env_script or ""), message=str(exc)
            )
            return None, [issue]


def credential_issues(block: str | None, *, required: bool) -> list[ConfigIssue]:
    """Earthdata credentials: a source that is configured but broken (a ~/.netrc others can
    read, a Secret block that does not exist) and, when ``required``, none at all."""
    from insarflow.tasks.credentials import (
        CredentialsError,
        find_credentials,
        load_earthdata_credentials,
    )

    field_name = "acquisition.credentials_secret_block" if block else "Earthdata credentials"
    try:
        if required:
            load_earthdata_credentials(secret_block=block)
        else:
            find_credentials("earthdata", secret_block=block)
    except CredentialsError as exc:
        return [ConfigIssue(field=field_name, value=block, message=str(exc))]
    except Exception as exc:  # the Prefect API holding the block is unreachable
        return [
            ConfigIssue(
                field="acquisition.credentials_secret_block",
                value=block,
                message=f"the Prefect API could not be asked for this Secret block "
                f"({type(exc).__name__}); start the server PREFECT_API_URL names, or use "
                "~/.netrc or EARTHDATA_USERNAME/EARTHDATA_PASSWORD instead",
            )
        ]
    return []


def environment_issues(data: Mapping[str, Any], stages: Collection[str]) -> list[ConfigIssue]:
    """What a run would lack (ISCE2, credentials) for a raw configuration that failed
    validation, reported with the file's own problems."""
    if data.get("engine", "isce2") != "isce2":
        return []
    issues: list[ConfigIssue] = []
    if "topsstack" in stages:
        isce2 = data.get("isce2")
        script = isce2.get("env_script") if isinstance(isce2, dict) else None
        issues += isce2_issues(Path(script) if isinstance(script, str) and script else None)[1]
    if "acquire" not in stages:
        return issues
    acquisition = data.get("acquisition")
    block = acquisition.get("credentials_secret_block") if isinstance(acquisition, dict) else None
    inputs = data.get("inputs")
    inputs = inputs if isinstance(inputs, dict) else {}
    if inputs.get("download_missing") is False:
        return issues
    return issues + credential_issues(
        block if isinstance(block, str) else None, required=not inputs.get("slc_dir")
    )


def update_connection_issues(
    config: StackConfig, processed: Sequence[str], fresh: Sequence[str]
) -> list[ConfigIssue]:
    """An update's new dates that its interferograms would not link to the processed network:
    MintPy would invert them as a separate network, relative to nothing. Sequential pairs
    always link consecutive dates, so only a gap longer than the longest interferogram
    MintPy keeps (``mintpy.network.tempBaseMax``) can cut the network."""
    from insarflow.plan import disconnected_dates, largest_gap

    value = str(config.mintpy.extra.get("mintpy.network.tempBaseMax", "auto")).strip().lower()
    if value in ("auto", "no") or not processed:
        return []
    max_days = float(value)
    lost = disconnected_dates(list(processed), list(fresh), config.topsstack.connections, max_days)
    if not lost:
        return []
    # The gap to bridge: the longest one up to the last date cut off.
    before, after, days = largest_gap([d for d in [*processed, *fresh] if d <= lost[-1]])
    return [
        ConfigIssue(
            field="mintpy.extra.mintpy.network.tempBaseMax",
            value=value,
            message=(
                f"new date(s) {', '.join(lost)} do not connect to the processed network "
                f"({min(processed)}..{max(processed)}): MintPy keeps interferograms of at most "
                f"{max_days:g} days and the longest gap is {days} days ({before} to {after}); "
                f"raise mintpy.network.tempBaseMax in mintpy.extra to at least {days}, or add "
                f"acquisitions between {before} and {after} (remove them from "
                "acquisition.exclude_dates)"
            ),
        )
    ]
