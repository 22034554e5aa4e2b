"""Incremental reprocessing: add new acquisitions to an existing stack.

The scheduled ``sbas-update`` deployment runs :func:`sbas_update`. It looks for
acquisitions newer than the stack's last date; when there are none it finishes at
once in a Completed state named "Nothing new". Otherwise it runs the full ``sbas``
flow, whose stages are idempotent: acquisition fetches only the new SLCs, topsStack
re-runs stackSentinel in update mode (previous run files archived) and executes only
lines that are not already done, MintPy's stack file gets the new interferograms appended
(:mod:`insarflow.tasks.ifgram_append`) and the network is inverted again, the zarr store gets
the new dates appended (atomically). New dates that would not connect to the processed
network stop it first. It holds the stack's slot throughout
(:func:`insarflow.tasks.lock.stack_slot`).
What was added (dates, topsStack lines, interferograms) becomes the Completed
state's message and the markdown artifact ``update-<stack>``.
"""

from __future__ import annotations

from datetime import date, timedelta

from prefect import flow, get_run_logger
from prefect.states import Completed, State

from insarflow.config import ConfigError, StackConfig
from insarflow.flows.sbas import sbas
from insarflow.flows.stages import AcquireResult, acquisition_record
from insarflow.preflight import update_connection_issues
from insarflow.tasks.lock import stack_slot
from insarflow.tasks.update_summary import (
    UpdateSummary,
    added_interferograms,
    publish_update_summary,
)


def new_dates(config: StackConfig, processed: list[str]) -> list[str]:
    """Acquisition dates available now that the stack has not processed."""
    if config.engine == "simulator":
        from insarflow.plan import expected_dates

        available, _ = expected_dates(config)
    else:
        from insarflow.tasks.search import search_scenes

        last = max(processed) if processed else None
        acq = config.acquisition
        start = acq.start
        if last is not None:
            start = max(start, _as_date(last) + timedelta(days=1))
        found = search_scenes(
            area_snwe=config.area.snwe(),
            wkt=config.area.wkt,
            track=acq.track,
            frame=acq.frame,
            start=start,
            end=acq.last_date(),
            polarization=acq.polarization,
            flight_direction=acq.flight_direction,
            platforms=acq.platforms,
            exclude_dates=[d.strftime("%Y%m%d") for d in acq.exclude_dates],
            allow_empty=True,
        )
        available = sorted(found.dates)
    return sorted(set(available) - set(processed))


def _as_date(yyyymmdd: str) -> date:
    from datetime import datetime

    return datetime.strptime(yyyymmdd, "%Y%m%d").date()


@flow(name="sbas-update")
def sbas_update(config: StackConfig) -> State:
    """Process only what is new for a stack; say what was added.

    Args:
        config: The stack (the same form as the sbas-adhoc deployment's).
    """
    logger = get_run_logger()
    # The slot covers the look at what is new, so two updates never both see the same date.
    with stack_slot(config.name, config.paths.root):
        previous = AcquireResult.load(acquisition_record(config))
        processed = previous.dates if previous else []
        fresh = new_dates(config, processed)
        restituted = [
            d for d, kind in (previous.orbit_kinds if previous else {}).items() if kind != "precise"
        ]
        if not fresh and not restituted:
            logger.info("stack %s: nothing new after %s", config.name, max(processed, default="-"))
            return Completed(message="Nothing new", name="Nothing new")
        issues = update_connection_issues(config, processed, fresh)
        if issues:  # before any download or processing
            raise ConfigError(f"update of stack {config.name}", issues)
        logger.info(
            "stack %s: %d new date(s) %s; %d date(s) to redo with precise orbits",
            config.name,
            len(fresh),
            ", ".join(fresh),
            len(restituted),
        )
        result = sbas(config)
    summary = UpdateSummary(
        stack=config.name,
        dates=fresh,
        lines_run={step.name: step.run for step in result.topsstack_steps},
        interferograms=added_interferograms(config.paths.stack, fresh),
        precise_orbits=restituted,
        mintpy=result.mintpy_notes,
    )
    publish_update_summary(summary)
    logger.info("stack %s: %s", config.name, summary.message())
    return Completed(message=summary.message(), data=result)
