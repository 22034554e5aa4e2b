"""The four stage subflows. Each maps the configuration to task arguments and composes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import flow, get_run_logger

from insarflow import atomic
from insarflow.config import StackConfig

# A runtime import: Prefect validates stage parameters (TopsStackResult.steps) with pydantic,
# which must resolve StepSummary.
from insarflow.tasks.inputs import InputsError
from insarflow.tasks.report import StepSummary

if TYPE_CHECKING:
    from insarflow.simulator.scene import SceneSpec
    from insarflow.tasks.orbits import OrbitChoice
    from insarflow.tasks.report import TruthError
    from insarflow.tasks.topsstack.executor import ExecutionReport

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
        atomic.write_text(path, json.dumps(data, indent=2))

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
    notes: list[str] = field(default_factory=list)  # how the stack was loaded and inverted


@dataclass
class ProductsResult:
    """What the products stage produced."""

    outputs: dict[str, Path]
    figures: list[Path]
    report_md: Path
    report_html: Path


def acquisition_record(config: StackConfig) -> Path:
    return config.paths.root / "acquisition.json"


def isce2_record(config: StackConfig) -> Path:
    """Which ISCE2 processed the stack (written by the topsStack stage)."""
    return config.paths.stack / ".insarflow" / "isce2.json"


def history_file(config: StackConfig) -> Path:
    """Where every run's topsStack and MintPy step figures accumulate."""
    from insarflow.tasks.report import HISTORY_NAME

    return config.paths.root / HISTORY_NAME


def _run_id() -> str:
    """The root flow run's id: the stages of one ``sbas`` run share it."""
    from prefect.runtime import flow_run

    return str(flow_run.root_flow_run_id or flow_run.id or "local")


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------- acquire


def scene_spec_for(config: StackConfig) -> SceneSpec:
    """The simulator's scene for a configuration (engine: simulator)."""
    from insarflow.simulator.scene import SceneSpec

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
        from insarflow.simulator.acquisition import make_synthetic_acquisitions

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
    """SLCs, orbits and DEM: the user's files where given, downloads for what is missing."""
    from insarflow.preflight import scenes_on_disk
    from insarflow.tasks.inputs import link_into, user_dem

    logger = get_run_logger()
    paths = config.paths
    acq = config.acquisition
    inputs = config.inputs
    local: dict[str, list[Path]] = {}
    if inputs.slc_dir is not None:
        local = scenes_on_disk(config)
        logger.info("%d date(s) of SAFE zips found in %s", len(local), inputs.slc_dir)
    excluded: dict[str, str] = {}
    downloaded: list[Path] = []
    if inputs.download_missing:
        downloaded, excluded, searched = _download_missing(config, set(local))
        # Dates the search no longer lists (e.g. excluded for coverage) stay out.
        local = {d: f for d, f in local.items() if d in searched or not searched}
    safes = link_into([f for files in local.values() for f in files], paths.slc) + downloaded
    dates = sorted({*local, *(_date_of(p) for p in downloaded)})
    if not safes:
        raise InputsError(
            f"inputs.slc_dir: no SAFE zip of track {acq.track} between {acq.start} and "
            f"{acq.end or 'now'} in {inputs.slc_dir}, and inputs.download_missing is false; "
            "check the folder, acquisition.track and the dates"
        )
    orbit_choices = _orbits(config, safes)
    if inputs.dem is not None:
        dem = user_dem(inputs.dem, paths.dem, config.area.snwe())
    else:
        from insarflow.tasks.dem import prepare_dem_task

        creds, env = None, None
        if acq.dem_source == "isce2":  # ISCE2's dem.py, in ISCE2's environment
            from insarflow.tasks.credentials import load_earthdata_credentials
            from insarflow.tasks.isce2_env import probe_isce2

            creds = load_earthdata_credentials(secret_block=acq.credentials_secret_block)
            env = probe_isce2(config.isce2.env_script, log_path=paths.logs / "isce2-env.log").env
        dem = prepare_dem_task(
            config.area.snwe(), paths.dem, source=acq.dem_source, credentials=creds, env=env
        )
    return AcquireResult(
        dates=dates,
        safe_files=list(safes),
        dem=dem,
        orbit_kinds={o.date: o.kind for o in orbit_choices},
        excluded=excluded,
    )


def _date_of(safe: Path) -> str:
    from insarflow.tasks.orbits import parse_safe_name

    return parse_safe_name(safe).date


def _download_missing(
    config: StackConfig, have_dates: set[str]
) -> tuple[list[Path], dict[str, str], set[str]]:
    """Search ASF; download the scenes of dates not on disk (credentials only then)."""
    from insarflow.tasks.download import download_files_task, items_for_scenes
    from insarflow.tasks.search import search_scenes_task

    paths = config.paths
    acq = config.acquisition
    found = search_scenes_task(
        area_snwe=config.area.snwe(),
        wkt=config.area.wkt,
        track=acq.track,
        frame=acq.frame,
        start=acq.start,
        end=acq.last_date(),
        polarization=acq.polarization,
        flight_direction=acq.flight_direction,
        platforms=acq.platforms,
        exclude_dates=[d.strftime("%Y%m%d") for d in acq.exclude_dates],
    )
    missing = [s for d, scenes in found.dates.items() if d not in have_dates for s in scenes]
    downloaded: list[Path] = []
    if missing:
        from insarflow.tasks.credentials import load_earthdata_credentials

        creds = load_earthdata_credentials(secret_block=acq.credentials_secret_block)
        downloaded = download_files_task(
            items_for_scenes(missing, paths.slc),
            max_parallel=acq.max_parallel_downloads,
            credentials=creds,
        )
    return downloaded, dict(found.excluded), set(found.dates)


def _orbits(config: StackConfig, safes: list[Path]) -> list[OrbitChoice]:
    """An orbit per SAFE: the user's files first, downloads only when allowed."""
    from insarflow.tasks.inputs import covering_orbits, link_into
    from insarflow.tasks.orbits import OrbitError, fetch_orbits_task, select_orbits

    paths = config.paths
    inputs = config.inputs
    if inputs.orbit_dir is not None:
        link_into(covering_orbits(inputs.orbit_dir, safes), paths.orbits)
    if inputs.download_missing:
        return fetch_orbits_task(safes, paths.orbits)

    def no_download(*_: object) -> list[Path]:
        raise OrbitError("downloads are off (inputs.download_missing: false)")

    return select_orbits(safes, paths.orbits, downloader=no_download)


# -------------------------------------------------------------------- topsstack


@flow(name="topsstack-stage")
def topsstack_stage(config: StackConfig, acquired: AcquireResult | None) -> TopsStackResult:
    """Write run files with stackSentinel.py (or the simulator) and execute them as a DAG."""
    from insarflow.compute import memory_budget_mb, task_runner_kwargs
    from insarflow.flows.topsstack import topsstack_flow
    from insarflow.tasks.bursts import check_area_bursts, reference_scenes, stack_burst_count
    from insarflow.tasks.topsstack.stack_sentinel import (
        build_stack_sentinel_args,
        check_safe_files,
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
        from insarflow.simulator.steps import install_simulator_bin

        extra_path.append(install_simulator_bin(paths.stack / "simulator" / "bin"))
    else:
        from insarflow.tasks.isce2_env import probe_isce2, record_isce2

        isce2 = probe_isce2(config.isce2.env_script, log_path=paths.logs / "isce2-env.log")
        logger.info("%s", isce2.summary())
        record_isce2(isce2, isce2_record(config))
        env = isce2.env

    ts = config.topsstack
    reference = ts.reference_date.strftime("%Y%m%d") if ts.reference_date else None
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
        reference_date=reference,
        num_overlap_connections=ts.num_overlap_connections,
        esd_coherence_threshold=ts.esd_coherence_threshold,
        ion_param_file=ts.ion_param_file,
    )
    paths.stack.mkdir(parents=True, exist_ok=True)
    paths.aux.mkdir(parents=True, exist_ok=True)
    safe_list = paths.stack / "SAFE_files.txt"
    wanted = sorted(str(p) for p in acquired.safe_files)
    have = sorted(safe_list.read_text().split()) if safe_list.is_file() else []
    counted: int | None = None  # bursts over all swaths: disk need, memory, topo's processes
    if not run_files_complete(paths.stack) or set(wanted) - set(have):
        check_safe_files(acquired.safe_files)
        if config.engine == "isce2" and not (paths.stack / "coreg_secondarys").exists():
            # A fresh stack: its size is predictable, so a too-small disk stops it here.
            from insarflow.plan import plan_stack
            from insarflow.tasks.diskspace import check_free_space

            counts = check_area_bursts(
                reference_scenes(acquired.safe_files, reference),
                ts.swaths,
                config.acquisition.polarization,
                config.area.snwe(),
                field=config.area.field_name(),
            )
            counted = sum(counts.values()) or None
            needed = plan_stack(config, acquired.dates, bursts=counted).processing_bytes
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
    if config.engine == "isce2" and counted is None:
        scenes = reference_scenes(acquired.safe_files, reference)
        area = config.area.snwe()
        counted = stack_burst_count(scenes, ts.swaths, config.acquisition.polarization, area)
    stack_bursts = counted or _bursts_per_swath(config) * len(ts.swaths)
    compute = config.compute
    started = _now()
    report = topsstack_flow(
        stack_dir=paths.stack,
        log_dir=paths.logs,
        memory_budget_mb=memory_budget_mb(compute),
        n_bursts=stack_bursts,
        range_looks=ts.range_looks,
        azimuth_looks=ts.azimuth_looks,
        n_workers=compute.workers,
        threads_per_worker=compute.threads_per_worker,
        use_gpu=ts.use_gpu,
        gpus=compute.gpus,
        extra_path=extra_path,
        env=env,
        scheduler_address=compute.scheduler_address,
        cluster=task_runner_kwargs(compute, log_dir=paths.logs / "jobs")
        if compute.jobqueue
        else None,
        learn_memory=compute.learn_memory,
        real_isce2=config.engine == "isce2",
        split_swaths=config.engine == "isce2" and ts.split_swaths,
    )
    from insarflow.tasks.report import StageRecord, append_stage_record

    steps = step_summaries(report)
    append_stage_record(history_file(config), StageRecord(_run_id(), "topsstack", started, steps))
    return TopsStackResult(
        stack_dir=paths.stack,
        steps=steps,
        wall_s=report.wall_s,
        critical_path=list(report.critical_path),
    )


def _bursts_per_swath(config: StackConfig) -> int:
    """Bursts per swath for memory estimates: the simulator's, or a full IW slice (real ISCE2
    before its SAFE zips are read)."""
    if config.engine == "simulator":
        return scene_spec_for(config).bursts_per_swath
    from insarflow.plan import BURSTS_PER_SWATH

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
    from insarflow.compute import jobqueue_dask_env, task_runner_kwargs
    from insarflow.tasks.ifgram_append import append_ifgrams_task
    from insarflow.tasks.mintpy_runner import SCHEDULER_ENV
    from insarflow.tasks.sbas import (
        MINTPY_STEP_TASKS,
        inversion_stamp,
        mintpy_steps,
        plot_task,
        preflight_task,
        prepare_metadata_task,
        reinversion_note,
        sbas_outputs,
        write_cfg_task,
    )

    paths = config.paths
    mp = config.mintpy
    jq = config.compute.jobqueue
    # MintPy's parallel steps run in jobs of the jobqueue's specification, or on the workers of
    # the configured scheduler
    address = config.compute.scheduler_address
    mintpy_env = (
        jobqueue_dask_env(task_runner_kwargs(config.compute, log_dir=paths.logs / "jobs"))
        if jq
        else {SCHEDULER_ENV: address}
        if address
        else None
    )
    network = preflight_task(
        paths.stack,
        allow_missing=mp.allow_missing_interferograms,
        exclude_dates=[d.strftime("%Y%m%d") for d in config.acquisition.exclude_dates],
    )
    prepare_metadata_task(paths.stack, log_dir=paths.logs)
    cfg = write_cfg_task(
        paths.mintpy / "smallbaselineApp.cfg",
        stack_dir=paths.stack,
        max_memory_gb=mp.max_memory_gb,
        num_workers=jq.jobs if jq else config.compute.workers,
        cluster=jq.kind if jq else "scheduler" if address else "local",
        reference_lat_lon=(mp.reference_point.lat, mp.reference_point.lon)
        if mp.reference_point
        else None,
        reference_date=mp.reference_date.strftime("%Y%m%d") if mp.reference_date else None,
        unwrap_error_method=mp.unwrap_error,
        troposphere_method=mp.troposphere,
        era5_credentials=mp.troposphere == "pyaps" and (Path.home() / ".cdsapirc").is_file(),
        update_mode=True,
        plot=mp.plot,
        extra=mp.extra,
    )
    # MintPy's steps are sequential; each is its own task so the UI shows progress and
    # a rerun resumes through MintPy's own skip logic.
    from insarflow.tasks.progress import StageProgress

    steps = mintpy_steps()
    progress = StageProgress(
        "mintpy", dict.fromkeys(steps, 1), unit="steps", artifact_key="mintpy-progress"
    )
    run_id = _run_id()
    # An update's new interferograms are appended; MintPy's load_data then skips the stack.
    appended = append_ifgrams_task(paths.mintpy, paths.logs / "mintpy" / "append_ifgrams.log")
    inverted = inversion_stamp(paths.mintpy)
    for step in steps:
        MINTPY_STEP_TASKS[step](
            step,
            cfg,
            paths.mintpy,
            paths.logs,
            env=mintpy_env,
            history_file=history_file(config),
            run_id=run_id,
        )
        progress.advance(step)
    if mp.plot:  # MintPy's own figures in mintpy/pic, as its users expect from mintpy.plot
        plot_task(paths.mintpy, paths.logs, history_file=history_file(config), run_id=run_id)
    outputs = sbas_outputs(paths.mintpy, cfg)
    notes = [appended.describe()] if appended else []
    notes += filter(None, [reinversion_note(paths.mintpy, inverted, network)])
    return SbasStageResult(
        mintpy_dir=paths.mintpy,
        velocity=outputs.velocity,
        timeseries=outputs.timeseries,
        notes=notes,
    )


# --------------------------------------------------------------------- products


@flow(name="products")
def products_stage(
    config: StackConfig, acquired: AcquireResult | None, stack: TopsStackResult | None
) -> ProductsResult:
    """zarr/GeoTIFF/netCDF, figures and the run report."""
    from insarflow import __version__
    from insarflow.tasks.export import export_products_task
    from insarflow.tasks.figures import make_figures_task
    from insarflow.tasks.isce2_env import recorded_isce2_version
    from insarflow.tasks.quality import assess_quality_task
    from insarflow.tasks.report import (
        ReportInputs,
        read_history,
        velocity_statistics,
        write_report_task,
    )
    from insarflow.tasks.sbas import EXCLUDED_DIRNAME

    paths = config.paths
    acquired = acquired or AcquireResult.load(acquisition_record(config))
    provenance = {
        "insarflow_version": __version__,
        "config_hash": config.fingerprint(),
        "stack": config.name,
        "engine": config.engine,
        "scenes": ",".join(p.name for p in acquired.safe_files) if acquired else "",
        "mintpy_version": _version_of("mintpy"),
        "isce2_version": "simulator"
        if config.engine == "simulator"
        else recorded_isce2_version(isce2_record(config)) or "unknown",
    }
    edge = config.export.chunk_size
    outputs = export_products_task(
        paths.mintpy,
        paths.products,
        list(config.export.formats),
        provenance,
        chunks={"y": edge, "x": edge},
    )
    figures = (
        make_figures_task(paths.mintpy, paths.products / "figures", points=config.export.points)
        if config.export.figures
        else None
    )
    quality = assess_quality_task(
        paths.mintpy, excluded_dir=paths.stack / "merged" / EXCLUDED_DIRNAME
    )
    warnings = list(quality.reference.warnings) if quality.reference else []
    warnings += figures.warnings if figures else []
    inputs = ReportInputs(
        stack_name=config.name,
        parameters=_parameters(config),
        quality=quality,
        warnings=warnings,
        truth_error=_truth_error(config),
        synthetic=bool(acquired and acquired.synthetic),
        scenes_per_date=_scenes_per_date(acquired),
        excluded_dates=acquired.excluded if acquired else {},
        orbit_kind=acquired.orbit_kinds if acquired else {},
        history=read_history(history_file(config)),
        figures=figures.paths if figures else [],
        velocity_stats=velocity_statistics(paths.mintpy),
        outputs={k: str(v) for k, v in outputs.items()},
    )
    md, html, _ = write_report_task(paths.products, inputs)
    return ProductsResult(
        outputs=dict(outputs),
        figures=figures.paths if figures else [],
        report_md=md,
        report_html=html,
    )


def simulator_truth(config: StackConfig) -> Path:
    """The simulator's true velocity and coherence (engine: simulator)."""
    return config.paths.stack / "simulator" / "truth.h5"


def _truth_error(config: StackConfig) -> TruthError | None:
    """Recovered vs true velocity in m year-1 for a simulator run, None otherwise."""
    if config.engine != "simulator" or not simulator_truth(config).is_file():
        return None
    from insarflow.simulator.truth import velocity_error
    from insarflow.tasks.report import TruthError

    error = velocity_error(config.paths.mintpy, simulator_truth(config))  # mm/yr
    return TruthError(
        rmse=error.rmse_mm_yr / 1000.0, bias=error.bias_mm_yr / 1000.0, pixels=error.pixels
    )


def _parameters(config: StackConfig) -> dict[str, str]:
    """The run's topsStack and MintPy settings by dotted name, for the report."""
    import json

    settings = {"topsstack": config.topsstack, "mintpy": config.mintpy}
    return {
        f"{section}.{key}": value if isinstance(value, str) else json.dumps(value)
        for section, model in settings.items()
        for key, value in model.model_dump(mode="json").items()
    }


def _version_of(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
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
