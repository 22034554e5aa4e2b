"""The ``insarflow`` command line."""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from insarflow.config import (
    STAGES,
    ConfigError,
    ConfigIssue,
    StackConfig,
    Stage,
    WorkPaths,
    config_schema,
    config_template,
    load_config_text,
    stage_range,
)

if TYPE_CHECKING:
    from insarflow.flows.sbas import SbasResult
    from insarflow.preflight import PreflightReport

from insarflow.console import isolate_prefect, quiet_prefect_console, route_logs, unroute_logs

app = typer.Typer(
    name="insarflow",
    help="Sentinel-1 InSAR time series as one reliable dataflow: "
    "acquire -> ISCE2 topsStack -> MintPy SBAS -> zarr, GeoTIFF, figures, report.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)
console = Console()
err_console = Console(stderr=True)

# Exit codes (README): done, processing failure, bad input, nothing to do.
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_NOTHING_TO_DO = 0, 1, 2, 3

VerboseOption = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        help="Show Prefect's and Dask's own log lines and tracebacks on the console "
        "(they are always in <work>/logs/run.log).",
    ),
]


def _version_callback(value: bool) -> None:
    if value:
        from insarflow import __version__

        console.print(f"insarflow {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Show the version."
        ),
    ] = False,
) -> None:
    """insarflow command line."""


def _read_config(source: str) -> StackConfig:
    """Load from a path or '-' (stdin); print every problem and exit 2 when invalid."""
    return _load(source, ())[0]


def _checked_config(
    source: str, stages: Collection[str], *, prefect_root: Path | None = None
) -> tuple[StackConfig, PreflightReport]:
    """:func:`_read_config` plus the pre-flight of ``stages`` (inputs, credentials, ISCE2, the
    network's size), all problems printed at once; exit 2 when there are any.

    Prefect, which the checks import, keeps its home under ``prefect_root`` (default: the work
    directory, where the run that follows keeps it)."""
    cfg, report = _load(source, stages, prefect_root=prefect_root)
    assert report is not None
    return cfg, report


@contextmanager
def _checks_only() -> Iterator[Path]:
    """A Prefect home for commands that only check (validate, plan): Prefect creates its home
    when imported, and these commands leave nothing in the work directory."""
    with tempfile.TemporaryDirectory(prefix="insarflow-check-") as tmp:
        yield Path(tmp)


def _load(
    source: str, stages: Collection[str], *, prefect_root: Path | None = None
) -> tuple[StackConfig, PreflightReport | None]:
    if source == "-":
        text, name = sys.stdin.read(), "<stdin>"
    else:
        path = Path(source)
        if not path.is_file():
            err_console.print(
                f"[red]config file {path} not found[/red]; "
                f"write one with `insarflow config > {path}`"
            )
            raise typer.Exit(EXIT_BAD_INPUT)
        text, name = path.read_text(encoding="utf-8"), str(path)
    cfg: StackConfig | None = None
    report: PreflightReport | None = None
    issues: list[ConfigIssue] = []
    try:
        cfg = load_config_text(text, name)
    except ConfigError as exc:
        issues = list(exc.issues)
    if stages:
        from insarflow.preflight import environment_issues, preflight

        # A Secret block lives in the configured Prefect database: keep that one then.
        if cfg is not None and not cfg.acquisition.credentials_secret_block:
            isolate_prefect(prefect_root or cfg.paths.root)
        if cfg is not None:
            report = preflight(cfg, list(stages))
            issues += report.issues
        else:  # still report what a run would lack, with the file's own problems
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError:
                data = None
            if isinstance(data, dict):
                issues += environment_issues(data, stages)
    if issues or cfg is None:
        _print_config_error(ConfigError(name, issues))
        raise typer.Exit(EXIT_BAD_INPUT)
    return cfg, report


def _print_config_error(exc: ConfigError) -> None:
    err_console.print(
        f"[bold red]{len(exc.issues)} problem(s)[/bold red] in {escape(exc.source)}:",
        soft_wrap=True,
    )
    for issue in exc.issues:
        value = (
            ""
            if issue.value is None or isinstance(issue.value, dict)
            else f" (got {issue.value!r})"
        )
        err_console.print(
            f"  [yellow]{escape(issue.field)}[/yellow]{escape(value)}: {escape(issue.message)}",
            highlight=False,
            soft_wrap=True,
        )


@app.command("config")
def config_cmd(
    schema: Annotated[
        bool, typer.Option("--schema", help="Print the JSON schema instead.")
    ] = False,
) -> None:
    """Print a commented YAML configuration template: the reference study's area and dates,
    every option at its default."""
    if schema:
        print(json.dumps(config_schema(), indent=2))
    else:
        print(config_template(), end="")


@app.command("validate")
def validate_cmd(
    config: Annotated[str, typer.Argument(help="YAML configuration file, or - for stdin.")],
) -> None:
    """Check a configuration and what a run needs (credentials, ISCE2); print every problem
    with its fix (exit code 2 when invalid)."""
    with _checks_only() as prefect_root:
        cfg, report = _checked_config(config, STAGES, prefect_root=prefect_root)
    south, north, west, east = cfg.area.snwe()
    isce2 = f", ISCE2 {report.isce2_version}" if report.isce2_version else ""
    console.print(
        f"[green]valid[/green]: stack {cfg.name!r}, engine {cfg.engine}{isce2}, "
        f"work dir {cfg.paths.root}",
        soft_wrap=True,
    )
    # S N W E and W E S N boxes can both be valid numbers: show the area as read.
    console.print(
        f"area: latitude {south:g} to {north:g}, longitude {west:g} to {east:g} "
        "(bbox is S N W E); check that this is your area",
        highlight=False,
        soft_wrap=True,
    )


@app.command("plan")
def plan_cmd(
    config: Annotated[str, typer.Argument(help="YAML configuration file, or - for stdin.")],
) -> None:
    """Show what would run: dates, pairs, run-file steps and line counts, disk and memory."""
    from insarflow.plan import BURSTS_PER_SWATH, plan_stack

    with _checks_only() as prefect_root:
        cfg, report = _checked_config(config, STAGES, prefect_root=prefect_root)
    plan = plan_stack(cfg, report.dates, bursts=report.bursts)
    note = " (estimated: 12-day revisit; exact after search)" if plan.dates_are_estimated else ""
    bursts = f"{plan.bursts} bursts"
    if cfg.engine == "isce2" and report.bursts is None:
        bursts = f"~{bursts} ({BURSTS_PER_SWATH} per swath until the SAFE zips are on disk)"
    console.print(
        f"[bold]{cfg.name}[/bold]: {len(plan.dates)} dates "
        f"{plan.dates[0]}..{plan.dates[-1]}{note}, "
        f"reference {plan.reference}, {len(plan.pairs)} interferograms, {bursts}",
        soft_wrap=True,
    )
    table = Table(title=f"topsStack run files ({cfg.topsstack.coregistration})")
    table.add_column("run file")
    table.add_column("lines", justify="right")
    table.add_column("tasks", justify="right")  # a line split by swath is one task per swath
    for name, count in plan.steps:
        table.add_row(name, str(count), str(plan.tasks(name, count)))
    tasks = sum(plan.tasks(name, count) for name, count in plan.steps)
    table.add_row("[bold]total[/bold]", f"[bold]{plan.total_lines}[/bold]", f"[bold]{tasks}[/bold]")
    console.print(table)
    scale = " (the simulator's synthetic scene)" if cfg.engine == "simulator" else ""
    console.print(
        f"estimated disk: ~{_size_mb(plan.disk_gb * 1024)}; largest single-line memory: "
        f"~{_size_mb(plan.peak_memory_mb)} (budget {cfg.compute.memory_gb:g} GB){scale}",
        soft_wrap=True,
    )
    if plan.peak_memory_mb > cfg.compute.memory_gb * 1024:
        err_console.print(
            "[yellow]warning[/yellow]: the largest line needs more than compute.memory_gb; "
            "raise the budget or take more looks (topsstack.range_looks/azimuth_looks)"
        )


def _size_mb(mb: float) -> str:
    return f"{mb:.0f} MB" if mb < 1024 else f"{mb / 1024:.1f} GB"


@app.command("run")
def run_cmd(
    config: Annotated[str, typer.Argument(help="YAML configuration file, or - for stdin.")],
    from_stage: Annotated[Stage, typer.Option("--from", help="First stage.")] = "acquire",
    until: Annotated[Stage, typer.Option("--until", help="Last stage.")] = "products",
    verbose: VerboseOption = False,
) -> None:
    """Run the stack end to end (or a range of stages).

    Exit codes: 0 done, 1 processing failure, 2 bad input, 3 nothing to do.
    """
    # typer refuses a name that is not a stage (exit 2, the choices listed)
    if STAGES.index(from_stage) > STAGES.index(until):
        err_console.print(f"[red]--from {from_stage} comes after --until {until}[/red]; swap them")
        raise typer.Exit(EXIT_BAD_INPUT)
    if not verbose:
        quiet_prefect_console()  # before the checks below import Prefect
    cfg, _ = _checked_config(config, stage_range(from_stage, until))
    with _run_console(
        cfg.paths, isolate=not cfg.acquisition.credentials_secret_block, verbose=verbose
    ):
        from insarflow.flows.sbas import sbas

        try:
            result = sbas(cfg, from_stage=from_stage, until=until)
        except Exception as exc:
            _fail(exc, cfg)
    _print_result(result)


@contextmanager
def _run_console(paths: WorkPaths, *, isolate: bool, verbose: bool) -> Iterator[None]:
    """Quiet console, full log file, Prefect state under the work directory (unless a
    server is configured or ``isolate`` is false); enter before Prefect is imported."""
    if not verbose:
        quiet_prefect_console()
    if isolate:
        isolate_prefect(paths.root)
    from prefect.logging.configuration import ensure_logging_setup

    import insarflow.flows.sbas  # noqa: F401 - Prefect and Dask set up their logging on import

    ensure_logging_setup()
    log_file = paths.logs / "run.log"
    handlers = route_logs(log_file, err_console, verbose=verbose)
    err_console.print(f"log: {log_file}", highlight=False, soft_wrap=True)
    try:
        yield
    finally:
        unroute_logs(handlers)


def _fail(exc: BaseException, cfg: StackConfig) -> NoReturn:
    """End a failed run with its message; the traceback is in the run's log file."""
    from insarflow.tasks.credentials import CredentialsError
    from insarflow.tasks.errors import PermanentError, unreachable_service
    from insarflow.tasks.search import AreaError, EmptySearchError

    code = EXIT_FAILED
    what = "run failed"
    if not isinstance(exc, PermanentError):  # e.g. a library's raw DNS or TLS error
        exc = unreachable_service(exc, "a network service") or exc
    if isinstance(exc, EmptySearchError):
        code, what = EXIT_NOTHING_TO_DO, "nothing to do"
    elif isinstance(exc, CredentialsError | AreaError):
        code, what = EXIT_BAD_INPUT, "bad input"
    err_console.print(f"[bold red]{what}[/bold red]: {escape(str(exc))}", soft_wrap=True)
    err_console.print(f"details: {cfg.paths.logs / 'run.log'}", highlight=False, soft_wrap=True)
    raise typer.Exit(code) from None


def _print_result(result: SbasResult) -> None:
    """Each product on its own line, never wrapped (paths are copied from here)."""
    rows: list[tuple[str, Path]] = []
    for key, value in vars(result).items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, Path):
                rows.append((key, item))
    width = max((len(k) for k, _ in rows), default=0)
    console.print(f"[bold]done[/bold]: stages {', '.join(result.stages_run)}")
    for key, path in rows:
        console.print(f"  {key:<{width}}  {path}", highlight=False, soft_wrap=True)


@app.command("demo")
def demo_cmd(
    workdir: Annotated[
        Path, typer.Option("--workdir", help="Where to write the demo stack.")
    ] = Path("./insarflow-demo"),
    dates: Annotated[int, typer.Option(help="Number of synthetic acquisitions.")] = 12,
    seed: Annotated[int, typer.Option(help="Random seed of the synthetic scene.")] = 42,
    verbose: VerboseOption = False,
) -> None:
    """Run the whole pipeline on the built-in simulator: no credentials, no network."""
    with _run_console(WorkPaths.from_work_dir(workdir), isolate=True, verbose=verbose):
        from insarflow.flows.demo import demo_config, run_demo

        cfg = demo_config(workdir, dates=dates, seed=seed)
        try:
            outcome = run_demo(cfg)
        except Exception as exc:
            _fail(exc, cfg)
    console.print(outcome.summary(), highlight=False, soft_wrap=True)


@app.command("export")
def export_cmd(
    config: Annotated[str, typer.Argument(help="YAML configuration file, or - for stdin.")],
    fmt: Annotated[
        list[str], typer.Option("--format", help="zarr, geotiff or netcdf (repeatable).")
    ] = ["zarr"],  # noqa: B006 - typer reads the default, never mutates it
) -> None:
    """Export a finished stack's MintPy results."""
    from insarflow.flows.sbas import export_stack

    cfg = _read_config(config)
    bad = [f for f in fmt if f not in ("zarr", "geotiff", "netcdf")]
    if bad:
        err_console.print(f"[red]--format {bad[0]}[/red] is not one of zarr, geotiff, netcdf")
        raise typer.Exit(EXIT_BAD_INPUT)
    outputs = export_stack(cfg, formats=fmt)
    for name, path in outputs.items():
        console.print(f"{name}: {path}")


@app.command("plot")
def plot_cmd(
    config: Annotated[str, typer.Argument(help="YAML configuration file, or - for stdin.")],
) -> None:
    """Make the figures of a finished stack (time series at export.points, if given)."""
    from insarflow.tasks.figures import draw_figures

    cfg = _read_config(config)
    drawn = draw_figures(cfg.paths.mintpy, cfg.paths.products / "figures", points=cfg.export.points)
    for path in drawn.paths:
        console.print(str(path))
    for warning in drawn.warnings:
        err_console.print(f"[yellow]warning[/yellow]: {escape(warning)}", soft_wrap=True)


def main() -> None:
    """Console-script entry point."""
    app()
