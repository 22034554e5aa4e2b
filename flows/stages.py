"""The four stage subflows. Each maps the configuration to task arguments and composes."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import flow, get_run_logger

from flows.config import StackConfig

# A runtime import: Prefect validates stage parameters (TopsStackResult.steps) with pydantic,
# which must resolve StepSummary.
from tasks.report import StepSummary

if TYPE_CHECKING:
    from tasks.simulator.scene import SceneSpec
    from tasks.topsstack.executor import ExecutionReport

# ------------------------------------------------------------------------ results


@dataclass
class AcquireResult:
    """What the acquisition stage produced."""

    dates: list[str]
    safe_files: list[Path]
    dem: Path
    orbit_kinds: dict[str, str] = field(default_factory=dict)  # date -> precise|restituted
    excluded: dict[str, str] = field(default_factory=dict)  # date -> reason
    synthetic: bool = False

    def save(self, path: Path) -> None:
        data = {
            "dates": self.dates,
            "safe_files": [str(p) for p in self.safe_files],
            "dem": str(self.dem),
            "orbit_kinds": self.orbit_kinds,
            "excluded": self.excluded,
            "synthetic": self.synthetic,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> AcquireResult | None:
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(
            dates=data["dates"],
            safe_files=[Path(p) for p in data["safe_files"]],
            dem=Path(data["dem"]),
            orbit_kinds=data["orbit_kinds"],
            excluded=data["excluded"],
            synthetic=data["synthetic"],
        )


@dataclass
class TopsStackResult:
    """What the topsStack stage produced."""

    stack_dir: Path
    steps: list[StepSummary] = field(default_factory=list)
    wall_s: float = 0.0
    critical_path: list[str] = field(default_factory=list)


@dataclass
class SbasStageResult:
    """What the MintPy stage produced."""

    mintpy_dir: Path
    velocity: Path
    timeseries: Path | None


@dataclass
class ProductsResult:
    """What the products stage produced."""

    outputs: dict[str, Path]
    figures: list[Path]
    report_md: Path
    report_html: Path


def acquisition_record(config: StackConfig) -> Path:
    return config.paths.root / "acquisition.json"


# ---------------------------------------------------------------------- acquire


def scene_spec_for(config: StackConfig) -> SceneSpec:
    """The simulator's scene for a configuration (engine: simulator)."""
    from tasks.simulator.scene import SceneSpec

    sim = config.simulator
    ts = config.topsstack
    south, north, west, east = config.area.snwe()
    return SceneSpec.regular(
        config.acquisition.start,
        sim.dates,
        sim.interval_days,
        seed=sim.seed,
        length=sim.length,
        width=sim.width,
        range_looks=ts.range_looks,
        azimuth_looks=ts.azimuth_looks,
        swaths=tuple(ts.swaths),
        relative_orbit=config.acquisition.track,
        center_lat=(south + north) / 2,
        center_lon=(west + east) / 2,
        dem_bbox=(south - 0.2, north + 0.2, west - 0.2, east + 0.2),
    )


@flow(name="acquire")
def acquire_stage(config: StackConfig) -> AcquireResult:
    """SLCs, orbits and DEM for the stack (synthetic and local with engine: simulator)."""
    logger = get_run_logger()
    paths = config.paths
    if config.engine == "simulator":
        from tasks.simulator.acquisition import make_synthetic_acquisitions

        spec = scene_spec_for(config)
        safes = make_synthetic_acquisitions(paths.slc, paths.orbits, paths.dem, spec)
        dem = next(paths.dem.glob("*.dem.wgs84"))
        result = AcquireResult(
            dates=list(spec.dates),
            safe_files=list(safes),
            dem=dem,
            orbit_kinds=dict.fromkeys(spec.dates, "precise"),
            synthetic=True,
        )
        logger.info("synthetic acquisitions: %d dates (engine: simulator)", len(spec.dates))
    else:
        result = _acquire_real(config)
    result.save(acquisition_record(config))
    return result


def _acquire_real(config: StackConfig) -> AcquireResult:
    from tasks.credentials import load_earthdata_credentials
    from tasks.dem import prepare_dem_task
    from tasks.download import DownloadItem, download_files_task
    from tasks.orbits import fetch_orbits_task
    from tasks.search import search_scenes_task

    paths = config.paths
    acq = config.acquisition
    creds = load_earthdata_credentials(secret_block=acq.credentials_secret_block)
    found = search_scenes_task(
        area_snwe=config.area.snwe(),
        wkt=config.area.wkt,
        track=acq.track,
        frame=acq.frame,
        start=acq.start,
        end=acq.end,
        polarization=acq.polarization,
        flight_direction=acq.flight_direction,
        platforms=acq.platforms,
        exclude_dates=[d.strftime("%Y%m%d") for d in acq.exclude_dates],
    )
    scenes = [s for date_scenes in found.dates.values() for s in date_scenes]
    items = [
        DownloadItem(url=s.url, dest=paths.slc / f"{s.granule}.zip", size=s.size, md5=s.md5)
        for s in scenes
    ]
    safes = download_files_task(items, max_parallel=acq.max_parallel_downloads, credentials=creds)
    orbits = fetch_orbits_task(safes, paths.orbits, credentials=creds)
    dem = prepare_dem_task(config.area.snwe(), paths.dem, source=acq.dem_source, credentials=creds)
    return AcquireResult(
        dates=sorted(found.dates),
        safe_files=list(safes),
        dem=dem,
        orbit_kinds={o.date: o.kind for o in orbits},
        excluded=dict(found.excluded),
    )


# -------------------------------------------------------------------- topsstack


@flow(name="topsstack-stage")
def topsstack_stage(config: StackConfig, acquired: AcquireResult | None) -> TopsStackResult:
    """Write run files with stackSentinel.py (or the simulator) and execute them as a DAG."""
    from flows.compute import task_runner_kwargs
    from flows.topsstack import topsstack_flow
    from tasks.topsstack.stack_sentinel import (
        build_stack_sentinel_args,
        check_safe_files,
        find_stack_sentinel,
        isce_env,
        prepare_stack_dir,
        run_files_complete,
        run_stack_sentinel,
    )

    logger = get_run_logger()
    paths = config.paths
    acquired = acquired or AcquireResult.load(acquisition_record(config))
    if acquired is None:
        raise RuntimeError(
            f"no acquisition record at {acquisition_record(config)}: run the acquire stage first "
            "(insarflow run CONFIG --until acquire)"
        )
    extra_path: list[Path] = []
    env: dict[str, str] | None = None
    if config.engine == "simulator":
        from tasks.simulator.steps import install_simulator_bin

        extra_path.append(install_simulator_bin(paths.stack / "simulator" / "bin"))
    else:
        # Fails before any work, with install instructions, when ISCE2 is missing.
        env = isce_env(os.environ, find_stack_sentinel(os.environ))

    ts = config.topsstack
    args = build_stack_sentinel_args(
        slc_dir=paths.slc,
        work_dir=paths.stack,
        orbit_dir=paths.orbits,
        aux_dir=paths.aux,
        dem_path=acquired.dem,
        swaths=ts.swaths,
        bbox=config.area.snwe(),
        connections=ts.connections,
        azimuth_looks=ts.azimuth_looks,
        range_looks=ts.range_looks,
        filter_strength=ts.filter_strength,
        coregistration=ts.coregistration,
        polarization=config.acquisition.polarization,
        use_gpu=ts.use_gpu,
        reference_date=ts.reference_date.strftime("%Y%m%d") if ts.reference_date else None,
        num_overlap_connections=ts.num_overlap_connections,
        esd_coherence_threshold=ts.esd_coherence_threshold,
        ion_param_file=ts.ion_param_file,
    )
    paths.stack.mkdir(parents=True, exist_ok=True)
    paths.aux.mkdir(parents=True, exist_ok=True)
    safe_list = paths.stack / "SAFE_files.txt"
    wanted = sorted(str(p) for p in acquired.safe_files)
    have = sorted(safe_list.read_text().split()) if safe_list.is_file() else []
    if not run_files_complete(paths.stack) or set(wanted) - set(have):
        check_safe_files(acquired.safe_files)
        if config.engine == "isce2" and not (paths.stack / "coreg_secondarys").exists():
            # A fresh stack: its size is predictable, so a too-small disk stops it here.
            from flows.plan import plan_stack
            from tasks.diskspace import check_free_space

            needed = plan_stack(config, acquired.dates).processing_bytes
            check_free_space(paths.stack, needed, what="topsStack processing")
        archived = prepare_stack_dir(paths.stack)
        if archived:
            logger.info("previous run files archived to %s", archived)
        run_stack_sentinel(
            args,
            stack_dir=paths.stack,
            log_path=paths.logs / "stackSentinel.log",
            extra_path=extra_path,
            env=env,
        )
    compute = config.compute
    report = topsstack_flow(
        stack_dir=paths.stack,
        log_dir=paths.logs,
        memory_budget_mb=int(compute.memory_gb * 1024),
        n_bursts=_bursts_per_swath(config) * len(ts.swaths),
        range_looks=ts.range_looks,
        azimuth_looks=ts.azimuth_looks,
        n_workers=compute.workers,
        threads_per_worker=compute.threads_per_worker,
        use_gpu=ts.use_gpu,
        extra_path=extra_path,
        env=env,
        scheduler_address=compute.scheduler_address,
        cluster=task_runner_kwargs(compute) if compute.jobqueue else None,
    )
    return TopsStackResult(
        stack_dir=paths.stack,
        steps=step_summaries(report),
        wall_s=report.wall_s,
        critical_path=list(report.critical_path),
    )


def _bursts_per_swath(config: StackConfig) -> int:
    """Bursts per swath for memory estimates: the simulator's, or a full IW slice."""
    if config.engine == "simulator":
        return scene_spec_for(config).bursts_per_swath
    from flows.plan import BURSTS_PER_SWATH

    return BURSTS_PER_SWATH


def step_summaries(report: ExecutionReport) -> list[StepSummary]:
    """Lines run/skipped/failed, time and retries per run-file step."""
    from collections import Counter, defaultdict

    def step_of(line_id: str) -> str:
        return line_id.split(":", 1)[0]

    status = Counter((step_of(k), r.status) for k, r in report.results.items())
    failed = Counter(step_of(f.line_id) for f in report.failures)
    seconds: defaultdict[str, float] = defaultdict(float)
    retries: Counter[str] = Counter()
    for attempt in report.attempts:
        seconds[step_of(attempt.line_id)] += attempt.duration_s
        retries[step_of(attempt.line_id)] += attempt.attempt > 1
    steps = sorted({s for s, _ in status} | set(failed))
    return [
        StepSummary(
            name=step,
            run=status[(step, "ran")],
            skipped=status[(step, "skipped")],
            failed=failed[step],
            duration_s=round(seconds[step], 2),
            retries=retries[step],
        )
        for step in steps
    ]


# ------------------------------------------------------------------------- sbas


@flow(name="sbas-mintpy")
def sbas_stage(config: StackConfig) -> SbasStageResult:
    """MintPy smallbaselineApp, one task per step, metadata written without ISCE2."""
    from tasks.sbas import (
        MINTPY_STEP_TASKS,
        mintpy_steps,
        preflight_task,
        prepare_metadata_task,
        sbas_outputs,
        write_cfg_task,
    )

    paths = config.paths
    mp = config.mintpy
    preflight_task(paths.stack, allow_missing=mp.allow_missing_interferograms)
    prepare_metadata_task(paths.stack, log_dir=paths.logs)
    cfg = write_cfg_task(
        paths.mintpy / "smallbaselineApp.cfg",
        stack_dir=paths.stack,
        max_memory_gb=mp.max_memory_gb,
        num_workers=config.compute.workers,
        reference_lat_lon=(mp.reference_point.lat, mp.reference_point.lon)
        if mp.reference_point
        else None,
        reference_date=mp.reference_date.strftime("%Y%m%d") if mp.reference_date else None,
        unwrap_error_method=mp.unwrap_error,
        troposphere_method=mp.troposphere,
        era5_credentials=mp.troposphere == "pyaps" and (Path.home() / ".cdsapirc").is_file(),
        update_mode=True,
        extra=mp.extra,
    )
    # MintPy's steps are sequential; each is its own task so the UI shows progress and
    # a rerun resumes through MintPy's own skip logic.
    from tasks.progress import StageProgress

    steps = mintpy_steps()
    progress = StageProgress(
        "mintpy", dict.fromkeys(steps, 1), unit="steps", artifact_key="mintpy-progress"
    )
    for step in steps:
        MINTPY_STEP_TASKS[step](step, cfg, paths.mintpy, paths.logs)
        progress.advance(step)
    outputs = sbas_outputs(paths.mintpy, cfg)
    return SbasStageResult(
        mintpy_dir=paths.mintpy, velocity=outputs.velocity, timeseries=outputs.timeseries
    )


# --------------------------------------------------------------------- products


@flow(name="products")
def products_stage(
    config: StackConfig, acquired: AcquireResult | None, stack: TopsStackResult | None
) -> ProductsResult:
    """zarr/GeoTIFF/netCDF, figures and the run report."""
    from tasks import __version__
    from tasks.export import export_products_task
    from tasks.figures import make_figures_task
    from tasks.report import ReportInputs, velocity_statistics, write_report_task

    paths = config.paths
    acquired = acquired or AcquireResult.load(acquisition_record(config))
    provenance = {
        "insarflow_version": __version__,
        "config_hash": config.fingerprint(),
        "stack": config.name,
        "engine": config.engine,
        "scenes": ",".join(p.name for p in acquired.safe_files) if acquired else "",
        "mintpy_version": _version_of("mintpy"),
        "isce2_version": "simulator" if config.engine == "simulator" else _version_of("isce"),
    }
    outputs = export_products_task(
        paths.mintpy, paths.products, list(config.export.formats), provenance
    )
    figures = (
        make_figures_task(paths.mintpy, paths.products / "figures") if config.export.figures else []
    )
    inputs = ReportInputs(
        stack_name=config.name,
        synthetic=bool(acquired and acquired.synthetic),
        scenes_per_date=_scenes_per_date(acquired),
        excluded_dates=acquired.excluded if acquired else {},
        orbit_kind=acquired.orbit_kinds if acquired else {},
        steps=stack.steps if stack else [],
        figures=list(figures),
        velocity_stats=velocity_statistics(paths.mintpy),
        outputs={k: str(v) for k, v in outputs.items()},
    )
    md, html, _ = write_report_task(paths.products, inputs)
    return ProductsResult(
        outputs=dict(outputs), figures=list(figures), report_md=md, report_html=html
    )


def _version_of(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module if module != "isce" else "isce2")
    except PackageNotFoundError:
        return "not installed"


def _scenes_per_date(acquired: AcquireResult | None) -> dict[str, list[str]]:
    if acquired is None:
        return {}
    per_date: dict[str, list[str]] = {d: [] for d in acquired.dates}
    for safe in acquired.safe_files:
        for d in per_date:
            if f"_{d}T" in safe.name:
                per_date[d].append(safe.name)
                break
    return per_date
