"""The end-to-end flow ``sbas``: acquire -> topsstack -> sbas (MintPy) -> products.

Each stage is a subflow; the flow only maps the configuration to stage arguments and
composes them. ``from_stage``/``until`` select a range of stages; every stage is
idempotent, so a rerun resumes where the last one stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from insarflow.config import StackConfig, Stage, stage_range
from insarflow.flows.stages import (
    AcquireResult,
    ProductsResult,
    SbasStageResult,
    TopsStackResult,
    acquire_stage,
    products_stage,
    sbas_stage,
    topsstack_stage,
)
from insarflow.preflight import preflight
from insarflow.tasks.lock import stack_lock, stack_slot
from insarflow.tasks.report import StepSummary


@dataclass
class SbasResult:
    """Every output of a run (paths are None for stages that did not run)."""

    work_dir: Path
    stack_dir: Path | None = None
    mintpy_dir: Path | None = None
    velocity: Path | None = None
    timeseries: Path | None = None
    zarr: Path | None = None
    geotiff: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    report_md: Path | None = None
    report_html: Path | None = None
    stages_run: list[Stage] = field(default_factory=list)
    topsstack_steps: list[StepSummary] = field(default_factory=list)  # lines run per step
    mintpy_notes: list[str] = field(default_factory=list)  # how MintPy loaded and inverted


@flow(name="sbas", log_prints=True)
def sbas(
    config: StackConfig, from_stage: Stage = "acquire", until: Stage = "products"
) -> SbasResult:
    """Process one stack: acquire -> topsstack -> sbas (MintPy) -> products.

    Args:
        config: The stack: what to process, how, and where.
        from_stage: First stage to run. acquire: search and download SLCs, orbits, DEM;
            topsstack: stackSentinel.py and its run-file lines; sbas: MintPy; products:
            zarr, GeoTIFF, figures, report. Finished work is skipped in any case.
        until: Last stage to run (same names; not before from_stage).
    """
    stages = stage_range(from_stage, until)
    # Everything knowable before work: bad inputs stop here, before any download.
    preflight(config, stages, log_dir=config.paths.logs).raise_for_issues(f"stack {config.name}")
    paths = config.paths
    result = SbasResult(work_dir=paths.root, stages_run=stages)
    logger = get_run_logger()
    with stack_slot(config.name, config.paths.root), stack_lock(paths.root):
        acquired: AcquireResult | None = None
        stack: TopsStackResult | None = None
        series: SbasStageResult | None = None
        if "acquire" in stages:
            acquired = acquire_stage(config)
        if "topsstack" in stages:
            stack = topsstack_stage(config, acquired)
            result.stack_dir = stack.stack_dir
            result.topsstack_steps = stack.steps
        if "sbas" in stages:
            series = sbas_stage(config)
            result.mintpy_dir = series.mintpy_dir
            result.velocity = series.velocity
            result.timeseries = series.timeseries
            result.mintpy_notes = series.notes
        if "products" in stages:
            products: ProductsResult = products_stage(config, acquired, stack)
            result.zarr = products.outputs.get("zarr")
            result.geotiff = [p for k, p in products.outputs.items() if k.startswith("geotiff")]
            result.figures = products.figures
            result.report_md = products.report_md
            result.report_html = products.report_html
    logger.info("stack %s: stages %s done", config.name, ", ".join(stages))
    return result


def export_stack(config: StackConfig, formats: list[str]) -> dict[str, Any]:
    """Export a finished stack's MintPy results (``insarflow export``)."""
    from insarflow.tasks.export import export_products

    edge = config.export.chunk_size
    return dict(
        export_products(
            config.paths.mintpy,
            config.paths.products,
            formats,  # type: ignore[arg-type]
            provenance={"config_hash": config.fingerprint(), "stack": config.name},
            chunks={"y": edge, "x": edge},
        )
    )
