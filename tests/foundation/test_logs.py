"""Module loggers (``logging.getLogger(__name__)`` under ``insarflow``) reach the run's log.

Prefect's extra-loggers setting, set by :mod:`insarflow.logs` when ``insarflow`` is imported,
gives them Prefect's API handler: what a task module logs inside a flow or task run is filed
under that run, as if it had used ``get_run_logger()``; outside a run it is not sent, silently.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger("insarflow.tasks.example")


def _messages(flow_run_id: Any) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
    return {entry.message: entry for entry in logs}


def test_module_loggers_reach_the_run_log(prefect_harness: None) -> None:
    from prefect import flow, task
    from prefect.runtime import flow_run

    ids: list[Any] = []

    @task
    def step() -> None:
        log.warning("from a task module, in a task run")

    @flow
    def run() -> None:
        ids.append(flow_run.id)
        log.info("from a task module, in the flow run")
        step()

    run()
    messages = _messages(ids[0])
    assert messages["from a task module, in the flow run"].task_run_id is None
    assert messages["from a task module, in the flow run"].level == logging.INFO
    assert messages["from a task module, in a task run"].task_run_id is not None


def test_records_outside_a_run_are_not_sent_and_warn_nothing() -> None:
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import APILogHandler

    ensure_logging_setup()  # as a flow run does
    handlers = logging.getLogger("insarflow").handlers
    assert any(isinstance(h, APILogHandler) for h in handlers)
    # pytest turns warnings into errors: Prefect's "no flow run id" warning would fail here
    log.warning("outside any run")
    done = threading.Event()
    threading.Thread(target=lambda: (log.info("in a bare thread"), done.set())).start()
    assert done.wait(10)
