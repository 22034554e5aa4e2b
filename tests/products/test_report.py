"""The run report: markdown, self-contained HTML, Prefect artifact."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from insarflow.tasks import figures, quality, report

from .synthetic import SyntheticMintpy


@pytest.fixture
def figure_paths(synthetic_mintpy: SyntheticMintpy, tmp_path: Path) -> list[Path]:
    return figures.make_figures(synthetic_mintpy.mintpy_dir, tmp_path / "out" / "figures")


def _inputs(figure_paths: list[Path], synthetic_mintpy: SyntheticMintpy) -> report.ReportInputs:
    return report.ReportInputs(
        scenes_per_date={
            "2024-12-01": ["S1A_IW_SLC__1SDV_20241201T101010_A.zip"],
            "2024-12-13": ["S1A_IW_SLC__1SDV_20241213T101010_B.zip", "S1A_C.zip"],
        },
        excluded_dates={"2024-12-25": "no orbit file (neither precise nor restituted)"},
        orbit_kind={"2024-12-01": "precise", "2024-12-13": "restituted"},
        synthetic=True,
        history=[
            report.StageRecord(
                "run-a",
                "topsstack",
                "2026-11-30T10:00:00+00:00",
                [
                    report.StepSummary("search", run=1, duration_s=2.0),
                    report.StepSummary(
                        "unwrap", run=12, skipped=3, failed=1, duration_s=3725.0, retries=2
                    ),
                ],
            ),
            report.StageRecord(
                "run-b",
                "topsstack",
                "2026-11-30T12:00:00+00:00",
                [report.StepSummary("unwrap", skipped=16)],
            ),
            report.StageRecord(
                "run-a",
                "mintpy",
                "2026-11-30T11:02:00+00:00",
                [report.StepSummary("invert_network", run=1, duration_s=61.0)],
            ),
        ],
        figures=figure_paths,
        velocity_stats=report.velocity_statistics(synthetic_mintpy.mintpy_dir),
        truth_error=report.TruthError(rmse=0.0008421, bias=-0.0021, pixels=1234),
        parameters={"topsstack.swaths": "[3]", "mintpy.unwrap_error": "bridging"},
        warnings=["export.points: P2 (34.9, 116.51) lies outside the geocoded scene"],
        quality=quality.Quality(
            pairs=[
                quality.PairQuality("20241201_20241213", -105.8, 0.679, True),
                quality.PairQuality("20241201_20241225", 10.7, 0.31, False),
            ],
            excluded_pairs=["20241213_20241225"],
            unwrap_errors=[
                quality.TripletCount("unwrapPhase", 2000, 100, 0.25, 3),
                quality.TripletCount("unwrapPhase_bridging", 2000, 0, 0.0, 0),
            ],
            closure=quality.ClosurePhase(
                "unwrapPhase_bridging", 5, 0.01, 0.25, [("20241201_20241213_20241225", 0.25)]
            ),
            reference=quality.ReferencePoint(
                34.57, 116.53, 35, 45, "2024-12-01", 0.93, 0.61, True, ["reference point X"]
            ),
        ),
        outputs={"zarr": Path("/data/work/products/timeseries.zarr")},
        stack_name="t142_f106",
    )


def test_velocity_statistics_over_masked_pixels(synthetic_mintpy: SyntheticMintpy) -> None:
    stats = report.velocity_statistics(synthetic_mintpy.mintpy_dir)
    v = synthetic_mintpy.velocity.astype(np.float64)  # m year-1, as exported
    finite = np.isfinite(v)
    values = v[synthetic_mintpy.mask & finite]
    assert stats["min"] == pytest.approx(values.min())
    assert stats["max"] == pytest.approx(values.max())
    assert stats["mean"] == pytest.approx(values.mean())
    assert stats["std"] == pytest.approx(values.std())
    assert stats["n_pixels"] == values.size
    assert stats["reliable_fraction"] == pytest.approx(values.size / finite.sum())
    # masking matters: some finite pixels are left out
    assert values.size < finite.sum()


def test_report_markdown_has_every_section(
    figure_paths: list[Path], synthetic_mintpy: SyntheticMintpy, tmp_path: Path
) -> None:
    out_dir = tmp_path / "out"
    md_path, html_path, md = report.write_report(out_dir, _inputs(figure_paths, synthetic_mintpy))
    assert md_path == out_dir / "report.md" and html_path == out_dir / "report.html"
    assert md_path.read_text() == md
    for heading in (
        "# insarflow run report",
        "## Warnings",
        "## Inputs",
        "## Parameters",
        "## Quality",
        "### Reference point",
        "### Interferograms",
        "### Unwrapping errors",
        "### Closure phase",
        "### Error against the simulator's truth",
        "### Excluded dates",
        "## Processing",
        "## Results",
        "## Outputs",
    ):
        assert re.search(rf"^{re.escape(heading)}$", md, re.M), heading
    assert "**SYNTHETIC DATA" in md
    assert "Stack: **t142_f106**" in md
    assert (
        "| 2024-12-13 | 2 | S1A_IW_SLC__1SDV_20241213T101010_B.zip, S1A_C.zip | restituted |" in md
    )
    assert "| 2024-12-25 | no orbit file (neither precise nor restituted) |" in md
    # both runs keep their own table: the rerun that found everything done does not
    # replace the first run's figures
    run_a = md.index("### Run 1 (started 2026-11-30T10:00:00+00:00, flow run `run-a`)")
    run_b = md.index("### Run 2 (started 2026-11-30T12:00:00+00:00, flow run `run-b`)")
    assert run_a < md.index("| unwrap | 12 | 3 | 1 | 2 | 1:02:05 |") < run_b
    assert run_a < md.index("| mintpy: invert_network | 1 | 0 | 0 | 0 | 0:01:01 |") < run_b
    assert run_a < md.index("| **total** | 14 | 3 | 1 | 2 | 1:03:08 |") < run_b
    assert run_b < md.index("| unwrap | 0 | 16 | 0 | 0 | 0:00:00 |")
    assert "**Steps with failures:** unwrap." in md
    assert "| 0.00084 m year-1 | -0.00210 m year-1 | 1234 |" in md
    assert "### Velocity statistics (m year-1, reliable pixels)" in md
    assert "## Warnings\n\n- **export.points: P2 (34.9, 116.51) lies outside" in md
    assert "| topsstack.swaths | [3] |" in md and "## Parameters" in md
    assert "| 34.57000 | 116.53000 | 35, 45 | 2024-12-01 | 0.930 | 0.610 | yes |" in md
    assert "**Warning:** reference point X" in md
    assert "2 interferograms, 1 used; dropped by MintPy's network modification: " in md
    assert "20241201_20241225." in md
    assert "| 20241201_20241225 | 10.7 | 0.310 | no |" in md
    assert "Left out before MintPy (incomplete files): 20241213_20241225." in md
    assert "| `unwrapPhase` | 2000 | 100 (5.0%) | 0.250 | 3 |" in md
    assert "| `unwrapPhase_bridging` | 2000 | 0 (0.0%) | 0.000 | 0 |" in md
    assert "over 5 triplets: median |closure| 0.010 rad" in md
    assert "| 20241201_20241213_20241225 | 0.250 |" in md
    assert "`/data/work/products/timeseries.zarr`" in md
    for path in figure_paths:
        assert f"](figures/{path.name})" in md


def test_report_html_is_self_contained(
    figure_paths: list[Path], synthetic_mintpy: SyntheticMintpy, tmp_path: Path
) -> None:
    _, html_path, _ = report.write_report(tmp_path / "out", _inputs(figure_paths, synthetic_mintpy))
    page = html_path.read_text()
    sources = re.findall(r'<img[^>]*src="([^"]+)"', page)
    assert len(sources) == len(figure_paths)
    for src, path in zip(sources, figure_paths, strict=True):
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == path.read_bytes()
    assert "<table>" in page and "<h2>Processing</h2>" in page
    assert "<strong>SYNTHETIC DATA" in page


def test_real_data_report_has_no_synthetic_note(tmp_path: Path) -> None:
    _, _, md = report.write_report(tmp_path, report.ReportInputs())
    assert "SYNTHETIC" not in md
    assert "No processing steps recorded." in md


def test_missing_figure_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"ReportInputs\.figures: .*nope\.png"):
        report.write_report(tmp_path, report.ReportInputs(figures=[tmp_path / "nope.png"]))


def test_report_task_publishes_the_artifact(
    prefect_harness: None,
    figure_paths: list[Path],
    synthetic_mintpy: SyntheticMintpy,
    tmp_path: Path,
) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    @flow
    def report_flow() -> str:
        return report.write_report_task(tmp_path / "out", _inputs(figure_paths, synthetic_mintpy))[
            2
        ]

    md = report_flow()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[report.ARTIFACT_KEY]))
        )
    # other tests of the session (the products stage) publish run reports of their own
    ours = [a for a in artifacts if "Stack: **t142_f106**" in str(a.data)]
    assert ours, "no run-report artifact"
    body = str(ours[-1].data)
    assert "## Processing" in body and "**SYNTHETIC DATA" in body
    assert "![" not in body  # local images cannot render in the UI
    assert "*Figure: velocity map* (`figures/velocity_map.png`)" in body
    assert "## Quality" in body and "### Unwrapping errors" in body
    assert "## Processing" in md
    with get_client(sync_client=True) as client:
        tables = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[report.PAIRS_ARTIFACT_KEY]))
        )
    rows = [r for t in tables for r in (json.loads(t.data) if isinstance(t.data, str) else t.data)]
    row = {"pair": "20241201_20241225", "bperp_m": 10.7, "mean_coherence": 0.31, "used": False}
    assert row in rows, "no interferogram-quality artifact with this report's pairs"
    with get_client(sync_client=True) as client:
        tables = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[report.PRODUCTS_ARTIFACT_KEY])
            )
        )
    rows = [r for t in tables for r in (json.loads(t.data) if isinstance(t.data, str) else t.data)]
    html_report = (tmp_path / "out" / report.REPORT_HTML).resolve()
    assert {
        "product": "report (html)",
        "path": str(tmp_path / "out" / report.REPORT_HTML),
        "link": html_report.as_uri(),
    } in rows, rows
    zarr = "/data/work/products/timeseries.zarr"
    assert {"product": "zarr", "path": zarr, "link": "file://" + zarr} in rows, rows


def test_history_round_trip_skips_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / report.HISTORY_NAME
    first = report.StageRecord("r1", "mintpy", "t0", [report.StepSummary("velocity", run=1)])
    second = report.StageRecord("r2", "topsstack", "t1", [report.StepSummary("unwrap", skipped=3)])
    report.append_stage_record(path, first)
    with path.open("a") as f:
        f.write('{"run_id": "r1", "stage"')  # a crash mid-write
        f.write("\n")
    report.append_stage_record(path, second)
    assert report.read_history(path) == [first, second]
    assert report.read_history(tmp_path / "absent.jsonl") == []
