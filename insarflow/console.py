"""What a command-line run shows, and where it keeps its Prefect state, scratch and logs.

The console gets progress lines (logger ``insarflow.progress``) and one-line warnings from
the run's own loggers; Prefect's and Dask's INFO chatter and every traceback go to
``<work>/logs/run.log`` only, unless ``--verbose``. Without a configured Prefect server the
run's Prefect database lives under ``<work>/prefect`` (concurrent runs never share one).
"""

from __future__ import annotations

import logging
import os
import tomllib
from pathlib import Path

from rich.console import Console
from rich.markup import escape

PROGRESS_LOGGER = "insarflow.progress"
# Loggers whose warnings are the run's own (Prefect's run loggers carry our tasks' messages).
_OWN_LOGGERS = ("insarflow", "prefect.flow_runs", "prefect.task_runs")


def configured_api_url(env: dict[str, str] | None = None) -> str | None:
    """PREFECT_API_URL from the environment or the active Prefect profile, if any."""
    env = dict(os.environ) if env is None else env
    if env.get("PREFECT_API_URL"):
        return env["PREFECT_API_URL"]
    home = Path(env.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()
    path = Path(env.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    try:
        profiles = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = env.get("PREFECT_PROFILE") or profiles.get("active", "ephemeral")
    url = profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL")
    return str(url) if url else None


def isolate_prefect(work_dir: Path) -> Path | None:
    """Keep this run's Prefect database and results under ``work_dir/prefect``.

    Call before Prefect is imported. Nothing changes when a server is configured
    (PREFECT_API_URL in the environment or the profile); when PREFECT_HOME is set it is kept
    (only the temporary server's startup allowance is raised). Returns the Prefect home used,
    or None.
    """
    if configured_api_url():
        return None
    # Without a server, every run starts a temporary one, migrating a new database on its first
    # start: allow for that on a busy machine (Prefect's default is 20 s).
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if os.environ.get("PREFECT_HOME"):
        return None
    home = work_dir.expanduser().absolute() / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    profiles = Path.home() / ".prefect" / "profiles.toml"
    if profiles.is_file():  # the user's profile keeps applying
        os.environ.setdefault("PREFECT_PROFILES_PATH", str(profiles))
    os.environ["PREFECT_HOME"] = str(home)
    return home


def quiet_prefect_console() -> None:
    """Mute Prefect's own console handler, here and in its temporary server's process.

    Call before Prefect is imported (its logging configuration reads this when it is set up).
    """
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")


def _current_run_name() -> str:
    """The task or flow run a module logger's record was emitted in ("" outside a run)."""
    from prefect.context import FlowRunContext, TaskRunContext

    task_run = TaskRunContext.get()
    if task_run is not None:
        return task_run.task_run.name
    flow_run = FlowRunContext.get()
    return flow_run.flow_run.name if flow_run is not None and flow_run.flow_run else ""


class ConsoleHandler(logging.Handler):
    """Progress lines, and the run's own warnings on one line each (no traceback)."""

    def __init__(self, console: Console) -> None:
        super().__init__(level=logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        name = record.name
        if name == PROGRESS_LOGGER:
            text = escape(record.getMessage())
        elif record.levelno == logging.WARNING and name.startswith(_OWN_LOGGERS):
            # Errors are not repeated here: the command ends with the failure's message.
            where = (
                getattr(record, "task_run_name", None)
                or getattr(record, "flow_run_name", None)
                or _current_run_name()
            )
            prefix = f"{where}: " if where else ""
            text = f"[yellow]warning[/yellow]: {escape(prefix + record.getMessage())}"
        else:
            return
        try:
            self.console.print(text, highlight=False, soft_wrap=True)
        except Exception:  # a closed stream must not break the run
            self.handleError(record)


def route_logs(log_file: Path, console: Console, *, verbose: bool) -> list[logging.Handler]:
    """Send every record at INFO and above to ``log_file``, and the console's share to it.

    Returns the handlers added (remove them with :func:`unroute_logs`).
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(log_file, encoding="utf-8")
    to_file.setLevel(logging.INFO)
    to_file.setFormatter(
        logging.Formatter("%(asctime)s | %(levelname)-7s | %(name)s - %(message)s")
    )
    handlers: list[logging.Handler] = [to_file]
    if not verbose:
        handlers.append(ConsoleHandler(console))
    logging.getLogger("insarflow").setLevel(logging.INFO)
    # Dask's own loggers do not propagate to the root: give them the file, keep their
    # console output to warnings.
    dask_logger = logging.getLogger("distributed")
    for handler in dask_logger.handlers:
        if isinstance(handler, logging.StreamHandler) and not verbose:
            handler.setLevel(logging.WARNING)
    for logger in (logging.getLogger(), dask_logger):
        for handler in handlers:
            if logger is dask_logger and isinstance(handler, ConsoleHandler):
                continue
            logger.addHandler(handler)
    return handlers


def unroute_logs(handlers: list[logging.Handler]) -> None:
    for logger in (logging.getLogger(), logging.getLogger("distributed")):
        for handler in handlers:
            logger.removeHandler(handler)
    for handler in handlers:
        handler.close()
