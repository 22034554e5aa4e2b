"""The stack configuration: YAML round trip and every validation rule's message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from insarflow.config import (
    ConfigError,
    StackConfig,
    config_template,
    dump_config,
    example_config,
    load_config,
    load_config_text,
    parse_config,
)


def minimal(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "t142",
        "work_dir": "/tmp/t142",
        "area": {"bbox": [34.0, 34.6, 116.5, 117.95]},
        "acquisition": {"track": 142, "start": "2024-12-01", "end": "2025-04-15"},
    }
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return data


def issues_of(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return [(i.field, i.message) for i in info.value.issues]


def test_yaml_round_trip_model_yaml_model() -> None:
    cfg = example_config()
    text = dump_config(cfg)
    again = load_config_text(text)
    assert again == cfg
    assert dump_config(again) == text


def test_template_is_commented_and_valid() -> None:
    text = config_template()
    assert load_config_text(text) == example_config()
    # every field's description appears as a comment
    for name, field in StackConfig.model_fields.items():
        assert field.description
        assert f"# {field.description[:30]}" in text, name
    assert "# Goldstein filter strength" in text


def test_every_field_has_a_description() -> None:
    schema = StackConfig.model_json_schema()
    missing = [
        f"{model}.{prop}"
        for model, body in {"StackConfig": schema, **schema["$defs"]}.items()
        for prop, spec in body.get("properties", {}).items()
        if "description" not in spec
    ]
    assert missing == []


def test_wesn_bbox_is_rejected_with_the_swap_suggested() -> None:
    [(field, message)] = issues_of(minimal(area__bbox=[116.5, 117.95, 34.0, 34.6]))
    assert field == "area.bbox"
    assert message == (
        "latitude 116.5 is outside [-90, 90]: bbox must be S N W E. It looks like W E S N "
        "order; ISCE2 then fails much later with 'IndexError: too many indices for array'. "
        "Did you mean [34.0, 34.6, 116.5, 117.95]?"
    )


def test_south_above_north() -> None:
    assert issues_of(minimal(area__bbox=[34.6, 34.0, 116.5, 117.95])) == [
        (
            "area.bbox",
            "south 34.6 is not below north 34.0: give the smaller latitude first (S N W E).",
        )
    ]


def test_west_east_reversed() -> None:
    [(field, message)] = issues_of(minimal(area__bbox=[34.0, 34.6, 117.95, 116.5]))
    assert field == "area.bbox"
    assert message.startswith("west 117.95 is not below east 116.5")


def test_start_after_end() -> None:
    assert issues_of(minimal(acquisition__start="2025-05-01")) == [
        (
            "acquisition.end",
            "start 2025-05-01 is not before end 2025-04-15: swap them or widen the range",
        )
    ]


@pytest.mark.parametrize("swaths", [[4], [0, 1], []])
def test_swaths_outside_1_2_3(swaths: list[int]) -> None:
    [(field, message)] = issues_of(minimal(topsstack__swaths=swaths))
    assert field == "topsstack.swaths"
    assert message.startswith(f"swaths {swaths} must be a non-empty subset of 1, 2, 3")


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("topsstack__azimuth_looks", 0, "greater than or equal to 1"),
        ("topsstack__range_looks", -3, "greater than or equal to 1"),
        ("topsstack__filter_strength", 1.5, "less than or equal to 1"),
        ("topsstack__connections", 0, "greater than or equal to 1"),
        ("topsstack__coregistration", "ESD", "'geometry' or 'NESD'"),
        ("acquisition__track", 176, "less than or equal to 175"),
    ],
)
def test_ranges(key: str, value: Any, fragment: str) -> None:
    [(field, message)] = issues_of(minimal(**{key: value}))
    assert field == key.replace("__", ".")
    assert fragment in message


def test_unknown_key_is_an_error() -> None:
    assert issues_of(minimal(topsstack__num_proc=4)) == [
        (
            "topsstack.num_proc",
            "unknown key; remove it or check the spelling (see `insarflow config`)",
        )
    ]


def test_all_errors_reported_at_once() -> None:
    data = minimal(
        area__bbox=[117.95, 116.5, 34.0, 34.6],
        topsstack__swaths=[1, 4],
        acquisition__start="2025-05-01",
    )
    fields = [f for f, _ in issues_of(data)]
    assert fields == ["area.bbox", "area.bbox", "acquisition.end", "topsstack.swaths"]


def test_dates_order_reported_beside_other_field_errors() -> None:
    data = minimal(acquisition__start="2025-05-01", acquisition__track=0)
    assert [f for f, _ in issues_of(data)] == ["acquisition.track", "acquisition.end"]


@pytest.mark.parametrize(
    ("swaths", "message"),
    [
        (4, "swaths must be a list of swath numbers, e.g. [3] or [1, 2, 3]"),
        (3, "swaths must be a list of swath numbers, e.g. [3] or [1, 2, 3]"),
        (["IW3"], "swaths are numbers, not names: write [3] instead of ['IW3']"),
        (["iw1", 2], "swaths are numbers, not names: write [1, 2] instead of ['iw1', 2]"),
    ],
)
def test_swaths_scalar_or_names_get_a_fix(swaths: Any, message: str) -> None:
    assert issues_of(minimal(topsstack__swaths=swaths)) == [("topsstack.swaths", message)]


def test_jobqueue_min_jobs_above_jobs_is_an_error() -> None:
    [(field, message)] = issues_of(
        minimal(compute__jobqueue={"kind": "slurm", "jobs": 2, "min_jobs": 3})
    )
    assert field == "compute.jobqueue"
    assert "compute.jobqueue.min_jobs = 3 is more than compute.jobqueue.jobs = 2" in message
    parse_config(minimal(compute__jobqueue={"kind": "slurm", "jobs": 2, "min_jobs": 2}))


def test_use_gpu_without_gpus_is_an_error() -> None:
    fix = "set compute.gpus to the number of GPUs, or set topsstack.use_gpu to false"
    assert issues_of(minimal(topsstack__use_gpu=True)) == [
        ("compute", f"topsstack.use_gpu is true but compute.gpus is 0: {fix}")
    ]
    parse_config(minimal(topsstack__use_gpu=True, compute__gpus=1))
    parse_config(minimal(topsstack__use_gpu=True, compute__scheduler_address="tcp://h:8786"))
    [(_, message)] = issues_of(
        minimal(topsstack__use_gpu=True, compute__jobqueue={"kind": "slurm"})
    )
    assert message.startswith("topsstack.use_gpu is true but compute.jobqueue.gpus_per_job is 0")
    # the reference study uses a GPU, and says so consistently
    study = load_config(Path(__file__).parents[2] / "examples" / "track142_eastchina.yaml")
    assert study.topsstack.use_gpu and study.compute.gpus >= 1


def test_generic_type_errors_carry_a_fix() -> None:
    [(field, message)] = issues_of(minimal(topsstack__connections="three"))
    assert field == "topsstack.connections"
    assert message.endswith("; fix: give a whole number")
    [(field, message)] = issues_of(minimal(acquisition__start="1st of May"))
    assert message.endswith("; fix: give a date as YYYY-MM-DD")


def test_wkt_area_and_exactly_one() -> None:
    cfg = parse_config(
        minimal(area={"wkt": "POLYGON((116.5 34, 117.95 34, 117.95 34.6, 116.5 34.6, 116.5 34))"})
    )
    assert cfg.area.snwe() == (34.0, 34.6, 116.5, 117.95)
    [(field, message)] = issues_of(minimal(area={}))
    assert field == "area"
    assert "exactly one of area.bbox" in message


def test_mintpy_extra_keys_must_be_mintpy_keys() -> None:
    [(field, message)] = issues_of(minimal(mintpy__extra={"network.coherenceBased": "yes"}))
    assert field == "mintpy.extra"
    assert "not mintpy.* keys" in message


def test_derived_paths(tmp_path: Path) -> None:
    cfg = parse_config(minimal(work_dir=str(tmp_path)))
    assert cfg.paths.stack == tmp_path / "stack"
    assert cfg.paths.slc == tmp_path / "SLC"
    assert cfg.paths.mintpy == tmp_path / "mintpy"


def test_fingerprint_changes_with_content() -> None:
    a = example_config()
    b = example_config()
    assert a.fingerprint() == b.fingerprint()
    b.topsstack.range_looks = 6
    assert a.fingerprint() != b.fingerprint()


def test_yaml_error_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config_text("name: [unclosed")
    assert yaml.safe_load(dump_config(example_config()))["name"] == "track142"


def test_open_ended_stack_plans_only_what_exists_by_today() -> None:
    from datetime import date, timedelta

    from insarflow.plan import plan_stack

    spec = yaml.safe_load((Path(__file__).parents[2] / "prefect.yaml").read_text())
    (update,) = [d for d in spec["deployments"] if d["name"] == "sbas-update"]
    config = parse_config(update["parameters"]["config"], "prefect.yaml sbas-update")
    assert config.acquisition.end is None
    assert config.acquisition.last_date() == date.today()
    plan = plan_stack(config)
    last = date(int(plan.dates[-1][:4]), int(plan.dates[-1][4:6]), int(plan.dates[-1][6:]))
    assert date.today() - timedelta(days=12) < last <= date.today()
    closed = config.model_copy(deep=True)
    closed.acquisition.end = date(2025, 4, 15)
    assert len(plan_stack(closed).dates) == 12  # 2024-12-01 .. 2025-04-15 every 12 days


def test_export_points_are_lat_lon_inside_the_area() -> None:
    ok = parse_config(minimal(export__points=[[34.3, 117.0]]))
    assert ok.export.points == [(34.3, 117.0)]
    # longitude first: the latitude is out of range
    [(field, message)] = issues_of(minimal(export__points=[[117.0, 34.3]]))
    assert field == "export.points"
    assert "points[0] = [117.0, 34.3] is not [lat, lon]" in message
    # a valid coordinate outside the area is named before any work
    [(field, message)] = issues_of(minimal(export__points=[[34.3, 117.0], [35.0, 117.0]]))
    assert message == (
        "export.points[1] = [35.0, 117.0] lies outside area (S N W E 34.0 34.6 116.5 117.95); "
        "give a point inside the area or remove it"
    )
