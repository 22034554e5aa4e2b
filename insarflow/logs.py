"""How insarflow's log records reach a Prefect run's log.

Every module logs with ``logging.getLogger(__name__)`` (a name under ``insarflow``). Prefect's
extra-loggers setting (``PREFECT_LOGGING_EXTRA_LOGGERS``) gives the ``insarflow`` logger
Prefect's API handler, which files each record under the flow or task run it was emitted in,
so the Prefect UI shows it; outside a run the record only reaches the ordinary handlers
(``PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW=ignore``), never a warning.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping

ROOT_LOGGER = "insarflow"
_EXTRA = "PREFECT_LOGGING_EXTRA_LOGGERS"


def send_to_run_log(env: MutableMapping[str, str] = os.environ) -> None:
    """Add ``insarflow`` to Prefect's extra loggers, and log at INFO and above.

    Prefect reads the setting when it is imported, and child processes (Dask workers, MintPy)
    inherit it through ``env``. When Prefect has already set up logging in this process, its
    extra-logger handlers are given to ``insarflow`` here, as Prefect does for the setting.
    """
    names = [n.strip() for n in env.get(_EXTRA, "").split(",") if n.strip()]
    if ROOT_LOGGER not in names:
        env[_EXTRA] = ",".join([*names, ROOT_LOGGER])
    env.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    logger = logging.getLogger(ROOT_LOGGER)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    configuration = sys.modules.get("prefect.logging.configuration")
    if configuration is not None and configuration.PROCESS_LOGGING_CONFIG:
        for handler in logging.getLogger("prefect.extra").handlers:
            if handler not in logger.handlers:
                logger.addHandler(handler)
