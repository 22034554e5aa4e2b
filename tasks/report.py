"""The run report: ``report.md`` (figures by relative path), a self-contained
``report.html`` (figures as base64) and a Prefect markdown artifact."""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import h5py
import markdown
import numpy as np
from prefect import task

from insarflow import atomic
from insarflow.constants import MIN_TEMP_COH_KEY
from insarflow.tasks.export import VELOCITY_UNITS, locate_products
from insarflow.tasks.quality import Quality

ARTIFACT_KEY: Final = "run-report"
PAIRS_ARTIFACT_KEY: Final = "interferogram-quality"
PRODUCTS_ARTIFACT_KEY: Final = "products"
REPORT_MD: Final = "report.md"
REPORT_HTML: Final = "report.html"


@dataclass(frozen=True)
class StepSummary:
    """What one processing step did: lines run, skipped (already done), failed."""

    name: str
    run: int = 0
    skipped: int = 0
    failed: int = 0
    duration_s: float = 0.0
    retries: int = 0


HISTORY_NAME: Final = "processing_history.jsonl"


@dataclass(frozen=True)
class TruthError:
    """Recovered minus true LOS velocity (``m year-1``) of a simulator run: ``bias`` is the
    offset the reference pixel's own noise gives the whole map, ``rmse`` the scatter once
    it is removed, over ``pixels`` coherent pixels."""

    rmse: float
    bias: float
    pixels: int


@dataclass(frozen=True)
class StageRecord:
    """The steps one stage ran in one run (``run_id``: the root flow run), appended to the
    work directory's :data:`HISTORY_NAME` so later runs keep earlier runs' figures."""

    run_id: str
    stage: str
    started: str
    steps: Sequence[StepSummary] = ()


def append_stage_record(path: Path, record: StageRecord) -> None:
    """Append ``record`` as one JSON line to the history file ``path``."""
    data = {
        "run_id": record.run_id,
        "stage": record.stage,
        "started": record.started,
        "steps": [dataclasses.asdict(st) for st in record.steps],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(data) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_history(path: Path) -> list[StageRecord]:
    """The records of ``path`` in order; a line torn by a crash is skipped."""
    if not Path(path).is_file():
        return []
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            data = json.loads(line)
            records.append(
                StageRecord(
                    run_id=str(data["run_id"]),
                    stage=str(data["stage"]),
                    started=str(data["started"]),
                    steps=[StepSummary(**st) for st in data["steps"]],
                )
            )
        except (ValueError, KeyError, TypeError):
            continue
    return records


@dataclass(frozen=True)
class ReportInputs:
    """Everything the report shows; the flow fills it from its tasks' results.

    Dates are ISO strings (``YYYY-MM-DD``); ``orbit_kind`` values are ``precise`` or
    ``restituted``; velocities are in ``m year-1`` like the exported products (see
    :func:`velocity_statistics`). ``warnings`` head the report (problems with the reference
    point or the user's points); ``parameters`` are the run's settings by dotted name.
    """

    scenes_per_date: Mapping[str, Sequence[str]] = field(default_factory=dict)
    excluded_dates: Mapping[str, str] = field(default_factory=dict)
    orbit_kind: Mapping[str, str] = field(default_factory=dict)
    synthetic: bool = False
    history: Sequence[StageRecord] = ()
    figures: Sequence[Path] = ()
    velocity_stats: Mapping[str, float] | None = None
    truth_error: TruthError | None = None
    quality: Quality | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)
    warnings: Sequence[str] = ()
    outputs: Mapping[str, Path | str] = field(default_factory=dict)
    title: str = "insarflow run report"
    stack_name: str | None = None
    notes: Sequence[str] = ()


def velocity_statistics(mintpy_dir: Path) -> dict[str, float]:
    """Min, max, mean, std and median of the geocoded velocity (``m year-1``) over masked pixels.

    Also ``n_pixels`` (reliable, finite) and ``reliable_fraction`` (of finite pixels).
    """
    products = locate_products(Path(mintpy_dir))
    with h5py.File(products.velocity, "r") as f:
        velocity = np.asarray(f["velocity"][:], dtype=np.float64)
    with h5py.File(products.mask, "r") as f:
        name = "mask" if "mask" in f else next(iter(f.keys()))
        mask = np.asarray(f[name][:], dtype=bool)
    finite = np.isfinite(velocity)
    values = velocity[finite & mask]
    if values.size == 0:
        raise ValueError(
            f"no reliable pixel in {products.velocity} under {products.mask}; lower "
            f"{MIN_TEMP_COH_KEY} or check the interferograms' coherence"
        )
    return {
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "median": float(np.median(values)),
        "n_pixels": float(values.size),
        "reliable_fraction": float(values.size / max(int(finite.sum()), 1)),
    }


def _cell(value: object) -> str:
    return str(value).replace("|", r"\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


def _caption(path: Path) -> str:
    return path.stem.replace("_", " ")


def _markdown(sections: ReportInputs, figure_ref: Mapping[Path, str]) -> str:
    s = sections
    lines = [f"# {s.title}", ""]
    if s.stack_name:
        lines += [f"Stack: **{s.stack_name}**", ""]
    if s.synthetic:
        lines += [
            "**SYNTHETIC DATA: these results come from the built-in simulator, not from "
            "Sentinel-1 acquisitions. Do not interpret them as ground deformation.**",
            "",
        ]
    if s.warnings:
        lines += ["## Warnings", ""]
        lines += [f"- **{w}**" for w in s.warnings] + [""]
    lines += ["## Inputs", ""]
    dates = sorted(set(s.scenes_per_date) | set(s.orbit_kind))
    if dates:
        rows = [
            [
                d,
                len(s.scenes_per_date.get(d, ())),
                ", ".join(s.scenes_per_date.get(d, ())) or "-",
                s.orbit_kind.get(d, "unknown"),
            ]
            for d in dates
        ]
        lines += [f"{len(dates)} acquisition dates.", ""]
        lines += _table(["date", "scenes", "scene names", "orbit"], rows)
        restituted = [d for d in dates if s.orbit_kind.get(d) == "restituted"]
        if restituted:
            lines += [
                f"Restituted orbits (less accurate) used for: {', '.join(restituted)}.",
                "",
            ]
    else:
        lines += ["No input scenes recorded.", ""]
    lines += ["### Excluded dates", ""]
    if s.excluded_dates:
        lines += _table(["date", "reason"], sorted(s.excluded_dates.items()))
    else:
        lines += ["None.", ""]

    if s.parameters:
        lines += ["## Parameters", ""]
        lines += _table(["setting", "value"], sorted(s.parameters.items()))
    lines += ["## Processing", ""]
    runs: dict[str, list[StageRecord]] = {}
    for record in s.history:
        runs.setdefault(record.run_id, []).append(record)
    if runs:
        lines += [
            f"{len(runs)} run(s) recorded; each run's table lists the lines/steps it ran "
            "and those it found already done (skipped).",
            "",
        ]
    else:
        lines += ["No processing steps recorded.", ""]
    for number, (run_id, records) in enumerate(runs.items(), start=1):
        steps = [
            (f"{r.stage}: {st.name}" if r.stage != "topsstack" else st.name, st)
            for r in records
            for st in r.steps
        ]
        lines += [f"### Run {number} (started {records[0].started}, flow run `{run_id}`)", ""]
        step_rows: list[list[object]] = [
            [name, st.run, st.skipped, st.failed, st.retries, _duration(st.duration_s)]
            for name, st in steps
        ]
        step_rows.append(
            [
                "**total**",
                sum(st.run for _, st in steps),
                sum(st.skipped for _, st in steps),
                sum(st.failed for _, st in steps),
                sum(st.retries for _, st in steps),
                _duration(sum(st.duration_s for _, st in steps)),
            ]
        )
        lines += _table(["step", "run", "skipped", "failed", "retries", "time"], step_rows)
        failed = [name for name, st in steps if st.failed]
        if failed:
            lines += [f"**Steps with failures:** {', '.join(failed)}.", ""]

    if s.quality is not None:
        lines += _quality_section(s.quality)
    lines += ["## Results", ""]
    if s.velocity_stats:
        lines += [f"### Velocity statistics ({VELOCITY_UNITS}, reliable pixels)", ""]
        lines += _table(
            ["statistic", "value"],
            [
                [
                    k,
                    f"{v:.0f}"
                    if k == "n_pixels"
                    else f"{v:.3f}"
                    if k.endswith("fraction")
                    else f"{v:.5f}",
                ]
                for k, v in s.velocity_stats.items()
            ],
        )
    if s.truth_error is not None:
        e = s.truth_error
        lines += ["### Error against the simulator's truth", ""]
        lines += _table(
            ["RMSE", "bias (reference-pixel offset)", "pixels"],
            [[f"{e.rmse:.5f} {VELOCITY_UNITS}", f"{e.bias:+.5f} {VELOCITY_UNITS}", e.pixels]],
        )
    if s.figures:
        lines += ["### Figures", ""]
        for path in s.figures:
            lines += [f"![{_caption(path)}]({figure_ref[path]})", ""]

    lines += ["## Outputs", ""]
    if s.outputs:
        lines += _table(["product", "location"], [[k, f"`{v}`"] for k, v in s.outputs.items()])
    else:
        lines += ["No outputs recorded.", ""]
    for note in s.notes:
        lines += [f"> {note}", ""]
    return "\n".join(lines).rstrip() + "\n"


def _quality_section(q: Quality) -> list[str]:
    lines = ["## Quality", "", "### Reference point", ""]
    ref = q.reference
    if ref is None:
        lines += ["Unknown (no REF_Y/REF_X or REF_LAT/REF_LON in the velocity file).", ""]
    else:
        lines += _table(
            [
                "latitude",
                "longitude",
                "row, column",
                "reference date",
                "temporal coherence",
                "average spatial coherence",
                "reliable (mask)",
            ],
            [
                [
                    f"{ref.lat:.5f}",
                    f"{ref.lon:.5f}",
                    f"{ref.row}, {ref.col}",
                    ref.date or "-",
                    f"{ref.temporal_coherence:.3f}",
                    f"{ref.avg_spatial_coherence:.3f}",
                    "yes" if ref.reliable else "**no**",
                ]
            ],
        )
        lines += [f"**Warning:** {w}" for w in ref.warnings] + ([""] if ref.warnings else [])
    lines += ["### Interferograms", ""]
    if q.pairs:
        dropped = [p.pair for p in q.pairs if not p.used]
        lines += [
            f"{len(q.pairs)} interferograms, {len(q.pairs) - len(dropped)} used; dropped by "
            f"MintPy's network modification: {', '.join(dropped) or 'none'}.",
            "",
        ]
    if q.excluded_pairs:
        lines += [
            "Left out before MintPy (incomplete files): " + ", ".join(q.excluded_pairs) + ".",
            "",
        ]
    if q.pairs:
        lines += _table(
            ["pair", "perpendicular baseline [m]", "mean coherence", "used"],
            [
                [p.pair, f"{p.bperp_m:.1f}", f"{p.mean_coherence:.3f}", "yes" if p.used else "no"]
                for p in q.pairs
            ],
        )
    lines += ["### Unwrapping errors", ""]
    if q.unwrap_errors:
        lines += [
            "Per pixel, the number of triplets of interferograms whose closure phase holds a "
            "non-zero integer number of cycles (MintPy's T_int); rows are the phase as loaded "
            "and after `correct_unwrap_error`.",
            "",
        ]
        lines += _table(
            ["phase", "pixels", "pixels with errors", "mean per pixel", "max per pixel"],
            [
                [
                    f"`{t.dataset}`",
                    t.pixels,
                    f"{t.pixels_with_errors} ({t.pixels_with_errors / max(t.pixels, 1):.1%})",
                    f"{t.mean_per_pixel:.3f}",
                    t.max_per_pixel,
                ]
                for t in q.unwrap_errors
            ],
        )
    else:
        lines += ["Not computed (no interferogram stack or no triplet).", ""]
    lines += ["### Closure phase", ""]
    c = q.closure
    if c is None:
        lines += ["No triplet in the network.", ""]
    else:
        lines += [
            f"Wrapped closure phase of `{c.dataset}` over {c.triplets} triplets: median "
            f"|closure| {c.median_abs_rad:.3f} rad; largest triplet mean "
            f"{c.max_triplet_mean_abs_rad:.3f} rad.",
            "",
        ]
        lines += _table(
            ["triplet", "mean abs closure phase [rad]"],
            [[name, f"{value:.3f}"] for name, value in c.worst],
        )
    return lines


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


_HTML_TEMPLATE: Final = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
th, td {{ border: 1px solid #bbb; padding: 0.2em 0.6em; text-align: left; }}
img {{ max-width: 100%; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""


def artifact_markdown(md_text: str) -> str:
    """The report for a Prefect artifact: local images cannot render there, so each
    image becomes a line naming its file."""
    return re.sub(r"!\[([^\]]*)\]\(([^)]*)\)", r"*Figure: \1* (`\2`)", md_text)


def write_report(out_dir: Path, sections: ReportInputs) -> tuple[Path, Path, str]:
    """Write ``report.md`` and ``report.html`` into ``out_dir``.

    Returns both paths and the markdown text. Figures are referenced by path relative
    to ``out_dir`` in the markdown and embedded as base64 in the HTML.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    missing = [str(p) for p in sections.figures if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(
            f"ReportInputs.figures: {', '.join(missing)} not found; make the figures first "
            "(insarflow.tasks.figures.make_figures)"
        )
    figures = [Path(p) for p in sections.figures]
    relative = {
        p: Path(os.path.relpath(p.resolve(), out_dir.resolve())).as_posix() for p in figures
    }
    md_text = _markdown(sections, relative)
    embedded = _markdown(sections, {p: _data_uri(p) for p in figures})
    body = markdown.markdown(embedded, extensions=["tables"], output_format="html")
    page = _HTML_TEMPLATE.format(title=html.escape(sections.title), body=body)

    md_path, html_path = out_dir / REPORT_MD, out_dir / REPORT_HTML
    atomic.write_text(md_path, md_text)
    atomic.write_text(html_path, page)
    return md_path, html_path, md_text


@task(name="write-report")
def write_report_task(out_dir: Path, sections: ReportInputs) -> tuple[Path, Path, str]:
    """Prefect task: :func:`write_report`, plus the markdown artifact ``run-report`` and the
    table artifacts ``interferogram-quality`` and ``products`` (each product and the report
    with its path and ``file://`` link)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    md_path, html_path, md_text = write_report(out_dir, sections)
    create_markdown_artifact(
        markdown=artifact_markdown(md_text),
        key=ARTIFACT_KEY,
        description=f"insarflow run report ({html_path})",
    )
    if sections.quality is not None and sections.quality.pairs:
        create_table_artifact(
            table=[dataclasses.asdict(p) for p in sections.quality.pairs],
            key=PAIRS_ARTIFACT_KEY,
            description="Interferograms: perpendicular baseline, mean coherence, used by MintPy",
        )
    products = {**sections.outputs, "report (html)": html_path, "report (markdown)": md_path}
    create_table_artifact(
        table=[
            {"product": name, "path": str(path), "link": Path(path).resolve().as_uri()}
            for name, path in products.items()
        ],
        key=PRODUCTS_ARTIFACT_KEY,
        description=f"Products of stack {sections.stack_name or ''} (paths on the machine "
        "that ran it)",
    )
    return md_path, html_path, md_text
