"""The ``insarflow`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from flows.config import (
    ConfigError,
    StackConfig,
    config_schema,
    config_template,
    load_config,
    load_config_text,
)

if TYPE_CHECKING:
    from flows.preflight import PreflightReport

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

Stage = Literal["acquire", "topsstack", "sbas", "products"]
STAGES: tuple[Stage, ...] = ("acquire", "topsstack", "sbas", "products")


def _version_callback(value: bool) -> None:
    if value:
        from tasks import __version__

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
    try:
        if source == "-":
            return load_config_text(sys.stdin.read(), "<stdin>")
        path = Path(source)
        if not path.is_file():
            err_console.print(
                f"[red]config file {path} not found[/red]; "
                f"write one with `insarflow config > {path}`"
            )
            raise typer.Exit(2)
        return load_config(path)
    except ConfigError as exc:
        _print_config_error(exc)
        raise typer.Exit(2) from None


def _print_config_error(exc: ConfigError) -> None:
    err_console.print(f"[bold red]{len(exc.issues)} problem(s)[/bold red] in {exc.source}:")
    for issue in exc.issues:
        value = (
            ""
            if issue.value is None or isinstance(issue.value, dict)
            else f" (got {issue.value!r})"
        )
        err_console.print(
            f"  [yellow]{issue.field}[/yellow]{value}: {issue.message}", highlight=False
        )


@app.command("config")
def config_cmd(
    schema: Annotated[
        bool, typer.Option("--schema", help="Print the JSON schema instead.")
    ] = False,
) -> None:
    """Print a commented YAML configuration template (the reference study)."""
    if schema:
        print(json.dumps(config_schema(), indent=2))
    else:
        print(config_template(), end="")


@app.command("validate")
def validate_cmd(
    config: Annotated[str, typer.Argument(help="YAML configuration file, or - for stdin.")],
) -> None:
    """Check a configuration; print every problem with its fix (exit code 2 when invalid)."""
    cfg = _read_config(config)
    report = _preflight(cfg, config)
    isce2 = f", ISCE2 {report.isce2_version}" if report.isce2_version else ""
    console.print(
        f"[green]valid[/green]: stack {cfg.name!r}, engine {cfg.engine}{isce2}, "
        f"work dir {cfg.paths.root}"
    )


def _preflight(cfg: StackConfig, source: str) -> PreflightReport:
    """Inputs, ISCE2 and network size; print every problem and exit 2 when there are any."""
    from flows.preflight import preflight

    report = preflight(cfg)
    if report.issues:
        _print_config_error(ConfigError(source, report.issues))
        raise typer.Exit(2)
    return report


@app.command("plan")
def plan_cmd(
    config: Annotated[str, typer.Argument(help="YAML configuration file, or - for stdin.")],
) -> None:
    """Show what would run: dates, pairs, run-file steps and line counts, disk and memory."""
    from flows.plan import plan_stack

    cfg = _read_config(config)
    report = _preflight(cfg, config)
    plan = plan_stack(cfg, report.dates)
    note = " (estimated: 12-day revisit; exact after search)" if plan.dates_are_estimated else ""
    console.print(
        f"[bold]{cfg.name}[/bold]: {len(plan.dates)} dates "
        f"{plan.dates[0]}..{plan.dates[-1]}{note}, "
        f"reference {plan.reference}, {len(plan.pairs)} interferograms, ~{plan.bursts} bursts"
    )
    table = Table(title=f"topsStack run files ({cfg.topsstack.coregistration})")
    table.add_column("run file")
    table.add_column("lines", justify="right")
    for name, count in plan.steps:
        table.add_row(name, str(count))
    table.add_row("[bold]total[/bold]", f"[bold]{plan.total_lines}[/bold]")
    console.print(table)
    console.print(
        f"estimated disk: ~{plan.disk_gb:.0f} GB; largest single-line memory: "
        f"~{plan.peak_memory_mb / 1024:.1f} GB (budget {cfg.compute.memory_gb} GB)"
    )
    if plan.peak_memory_mb > cfg.compute.memory_gb * 1024:
        err_console.print(
            "[yellow]warning[/yellow]: the largest line needs more than compute.memory_gb; "
            "raise the budget or take more looks (topsstack.range_looks/azimuth_looks)"
        )


@app.command("run")
def run_cmd(
    config: Annotated[str, typer.Argument(help="YAML configuration file, or - for stdin.")],
    from_stage: Annotated[
        str, typer.Option("--from", help="First stage: acquire|topsstack|sbas|products.")
    ] = "acquire",
    until: Annotated[
        str, typer.Option("--until", help="Last stage: acquire|topsstack|sbas|products.")
    ] = "products",
) -> None:
    """Run the stack end to end (or a range of stages)."""
    from flows.sbas import sbas

    cfg = _read_config(config)
    for name, value in (("--from", from_stage), ("--until", until)):
        if value not in STAGES:
            err_console.print(
                f"[red]{name} {value!r}[/red] is not a stage; use one of {', '.join(STAGES)}"
            )
            raise typer.Exit(2)
    if STAGES.index(from_stage) > STAGES.index(until):
        err_console.print(f"[red]--from {from_stage} comes after --until {until}[/red]; swap them")
        raise typer.Exit(2)
    try:
        result = sbas(cfg, from_stage=from_stage, until=until)
    except ConfigError as exc:
        _print_config_error(exc)
        raise typer.Exit(2) from None
    except Exception as exc:
        _fail(exc)
    _print_result(result)


def _fail(exc: BaseException) -> NoReturn:
    """End a failed run with its message (the full traceback is in the logs above)."""
    err_console.print(f"[bold red]run failed[/bold red]: {exc}", highlight=False)
    raise typer.Exit(1) from None


def _print_result(result: object) -> None:
    table = Table(title="outputs")
    table.add_column("what")
    table.add_column("where")
    for key, value in vars(result).items():
        if value is not None and not key.startswith("_"):
            table.add_row(key, str(value))
    console.print(table)


@app.command("demo")
def demo_cmd(
    workdir: Annotated[
        Path, typer.Option("--workdir", help="Where to write the demo stack.")
    ] = Path("./insarflow-demo"),
    dates: Annotated[int, typer.Option(help="Number of synthetic acquisitions.")] = 12,
    seed: Annotated[int, typer.Option(help="Random seed of the synthetic scene.")] = 42,
) -> None:
    """Run the whole pipeline on the built-in simulator: no credentials, no network."""
    from flows.demo import demo_config, run_demo

    cfg = demo_config(workdir, dates=dates, seed=seed)
    try:
        outcome = run_demo(cfg)
    except Exception as exc:
        _fail(exc)
    console.print(outcome.summary())


@app.command("export")
def export_cmd(
    config: Annotated[str, typer.Argument(help="YAML configuration file, or - for stdin.")],
    fmt: Annotated[
        list[str], typer.Option("--format", help="zarr, geotiff or netcdf (repeatable).")
    ] = ["zarr"],  # noqa: B006 - typer reads the default, never mutates it
) -> None:
    """Export a finished stack's MintPy results."""
    from flows.sbas import export_stack

    cfg = _read_config(config)
    bad = [f for f in fmt if f not in ("zarr", "geotiff", "netcdf")]
    if bad:
        err_console.print(f"[red]--format {bad[0]}[/red] is not one of zarr, geotiff, netcdf")
        raise typer.Exit(2)
    outputs = export_stack(cfg, formats=fmt)
    for name, path in outputs.items():
        console.print(f"{name}: {path}")


@app.command("plot")
def plot_cmd(
    config: Annotated[str, typer.Argument(help="YAML configuration file, or - for stdin.")],
) -> None:
    """Make the figures of a finished stack."""
    from tasks.figures import make_figures

    cfg = _read_config(config)
    paths = make_figures(cfg.paths.mintpy, cfg.paths.products / "figures")
    for path in paths:
        console.print(str(path))


def main() -> None:
    """Console-script entry point."""
    app()
