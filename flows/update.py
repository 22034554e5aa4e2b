"""Incremental reprocessing: add new acquisitions to an existing stack.

The scheduled ``sbas-update`` deployment runs :func:`sbas_update`. It looks for
acquisitions newer than the stack's last date; when there are none it finishes at
once in a Completed state named "Nothing new". Otherwise it runs the full ``sbas``
flow, whose stages are idempotent: acquisition fetches only the new SLCs, topsStack
re-runs stackSentinel in update mode (previous run files archived) and executes only
lines that are not already done, MintPy loads in update mode, products are replaced
atomically.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.states import Completed, State

from flows.config import StackConfig, load_config
from flows.sbas import sbas
from flows.stages import AcquireResult, acquisition_record


def new_dates(config: StackConfig, processed: list[str]) -> list[str]:
    """Acquisition dates available now that the stack has not processed."""
    if config.engine == "simulator":
        from flows.plan import expected_dates

        available, _ = expected_dates(config)
    else:
        from tasks.search import search_scenes

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
def sbas_update(config_path: str) -> State:
    """Process only what is new for the stack configured in ``config_path``."""
    logger = get_run_logger()
    config = load_config(Path(config_path))
    previous = AcquireResult.load(acquisition_record(config))
    processed = previous.dates if previous else []
    fresh = new_dates(config, processed)
    restituted = [
        d for d, kind in (previous.orbit_kinds if previous else {}).items() if kind != "precise"
    ]
    if not fresh and not restituted:
        logger.info("stack %s: nothing new after %s", config.name, max(processed, default="-"))
        return Completed(message="Nothing new", name="Nothing new")
    logger.info(
        "stack %s: %d new date(s) %s; %d date(s) to redo with precise orbits",
        config.name,
        len(fresh),
        ", ".join(fresh),
        len(restituted),
    )
    result = sbas(config)
    return Completed(
        message=f"added {len(fresh)} date(s): {', '.join(fresh) or '-'}",
        data=result,
    )
