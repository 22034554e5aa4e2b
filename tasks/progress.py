"""Progress of a long stage: lines on the ``insarflow.progress`` logger and a Prefect
progress artifact carrying the same numbers.

The command line shows that logger's lines on the console; the artifact's percentage and
description follow them in the Prefect UI.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from uuid import UUID

log = logging.getLogger("insarflow.progress")


def format_duration(seconds: float | None) -> str:
    """``1:02:03`` / ``2:03`` style, or ``?`` when unknown."""
    if seconds is None:
        return "?"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def create_progress_artifact(description: str, key: str | None = None) -> UUID | None:
    """A progress artifact of the current run, or None outside a run or without an API.

    The sync client is used directly (``prefect.artifacts.create_progress_artifact`` leaves a
    client open per call), with the run ids taken from the current context.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate
    from prefect.context import FlowRunContext, TaskRunContext

    task_ctx, flow_ctx = TaskRunContext.get(), FlowRunContext.get()
    if task_ctx is None and (flow_ctx is None or flow_ctx.flow_run is None):
        return None
    try:
        with get_client(sync_client=True) as client:
            artifact = client.create_artifact(
                ArtifactCreate(
                    type="progress",
                    key=key,
                    data=0.0,
                    description=description,
                    task_run_id=task_ctx.task_run.id if task_ctx else None,
                    flow_run_id=(
                        task_ctx.task_run.flow_run_id
                        if task_ctx
                        else flow_ctx.flow_run.id
                        if flow_ctx and flow_ctx.flow_run
                        else None
                    ),
                )
            )
        return artifact.id
    except Exception as exc:  # progress display must never fail the work
        log.debug("no progress artifact: %s", exc)
        return None


def update_progress_artifact(
    artifact_id: UUID, percent: float, description: str | None = None
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactUpdate

    try:
        with get_client(sync_client=True) as client:
            client.update_artifact(
                artifact_id, ArtifactUpdate(data=percent, description=description)
            )
    except Exception as exc:
        log.debug("progress artifact update failed: %s", exc)


class StageProgress:
    """Units of work (lines, steps) done of a known total, grouped (by run-file step).

    :meth:`advance` records finished units; a line is logged when a group completes, when
    everything is done, and otherwise at most every ``interval_s``; the artifact follows at
    most every ``interval_s`` and at the end. The ETA extrapolates from the units that
    really ran (skipped ones cost nothing).
    """

    def __init__(
        self,
        stage: str,
        groups: Mapping[str, int],
        *,
        unit: str = "lines",
        interval_s: float = 5.0,
        artifact_key: str | None = None,
    ) -> None:
        self.stage = stage
        self.unit = unit
        self.totals = dict(groups)
        self.done = dict.fromkeys(groups, 0)
        self.skipped = 0
        self.ran = 0
        self.interval_s = interval_s
        self.started = time.monotonic()
        self._last_log = self.started
        self._last_publish = self.started
        self._percent = -1
        self._artifact = create_progress_artifact(self.describe(None), key=artifact_key)

    @property
    def total(self) -> int:
        return sum(self.totals.values())

    @property
    def completed(self) -> int:
        return sum(self.done.values())

    def eta_s(self) -> float | None:
        remaining = self.total - self.completed
        if remaining == 0:
            return 0.0
        if self.ran == 0:
            return None
        return (time.monotonic() - self.started) / self.ran * remaining

    def describe(self, group: str | None) -> str:
        elapsed = format_duration(time.monotonic() - self.started)
        text = f"{self.stage}: {self.completed} of {self.total} {self.unit} done"
        if group is not None:
            text += f" ({group} {self.done[group]}/{self.totals[group]})"
        if self.skipped:
            text += f", {self.skipped} skipped"
        return f"{text}, elapsed {elapsed}, ETA {format_duration(self.eta_s())}"

    def advance(self, group: str, *, skipped: bool = False) -> None:
        """One unit of ``group`` finished (``skipped``: found already done)."""
        self.done[group] += 1
        if skipped:
            self.skipped += 1
        else:
            self.ran += 1
        now = time.monotonic()
        finished = self.completed == self.total
        # A group found entirely done already is not announced on its own (a rerun).
        group_done = self.done[group] == self.totals[group] and not skipped
        if not (finished or group_done or now - self._last_log >= self.interval_s):
            return
        self._last_log = now
        text = self.describe(group)
        log.info(text)
        # The artifact is an API round trip from the caller's thread (the topsStack stage's
        # submission loop): at most one per interval, and the last.
        percent = int(100 * self.completed / self.total) if self.total else 100
        due = finished or now - self._last_publish >= self.interval_s
        if self._artifact is not None and due and percent != self._percent:
            self._percent = percent
            self._last_publish = now
            update_progress_artifact(self._artifact, float(percent), text)
