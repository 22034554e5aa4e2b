"""The Prefect UI form: the JSON schema Prefect builds from the flows' parameters.

Its defaults are the template's values (`insarflow config`), its lists have real defaults
and refuse to be empty, its enumerations are choices, and both deployments' flows take the
same parameter.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from prefect.utilities.callables import parameter_schema

from insarflow.config import STAGES, ConfigError, config_template, parse_config
from insarflow.flows.sbas import sbas
from insarflow.flows.update import sbas_update

from .test_config import minimal


def _schema(fn: Any) -> dict[str, Any]:
    return parameter_schema(fn).model_dump()


def _ref(spec: dict[str, Any]) -> str | None:
    """The definition a property refers to (directly or as an optional ``anyOf``)."""
    for option in [spec, *spec.get("anyOf", [])]:
        if "$ref" in option:
            return str(option["$ref"]).rsplit("/", 1)[-1]
    return None


def form_vs_template(
    defs: dict[str, Any], name: str, template: dict[str, Any], path: str
) -> tuple[list[str], list[str], int]:
    """(fields whose form default differs from the template, fields with a default the form
    does not show, defaults compared), over the model ``name`` and its sub-models."""
    differ: list[str] = []
    hidden: list[str] = []
    compared = 0
    body = defs[name]
    for prop, spec in body["properties"].items():
        where, value = f"{path}{prop}", template[prop]
        ref = _ref(spec)
        if ref is not None and isinstance(value, dict):
            d, h, c = form_vs_template(defs, ref, value, f"{where}.")
            differ, hidden, compared = differ + d, hidden + h, compared + c
        elif "default" in spec:
            compared += 1
            if spec["default"] != value:
                differ.append(f"{where}: form {spec['default']!r}, template {value!r}")
        elif prop not in body.get("required", []) and ref is None:
            hidden.append(where)
    return differ, hidden, compared


# Only the stack's where and when, optional fields (no value by default) that the template
# fills with the reference study's, differ.
WHERE_AND_WHEN = [
    "config.area.bbox: form None, template [34.0, 34.6, 116.5, 117.95]",
    "config.acquisition.frame: form None, template 106",
    "config.acquisition.end: form None, template '2025-04-15'",
]


def test_every_form_default_is_the_templates_value() -> None:
    schema = _schema(sbas.fn)
    template = yaml.safe_load(config_template())
    differ, hidden, compared = form_vs_template(
        schema["definitions"], "StackConfig", template, "config."
    )
    assert differ == WHERE_AND_WHEN
    assert hidden == []  # e.g. a default_factory, which the schema (and the form) omits
    assert compared >= 50


def test_a_default_that_differs_or_is_hidden_is_found() -> None:
    schema = _schema(sbas.fn)
    template = yaml.safe_load(config_template())
    template["topsstack"]["filter_strength"] = 0.6
    template["acquisition"]["platforms"] = ["S1A"]
    del schema["definitions"]["ExportConfig"]["properties"]["formats"]["default"]
    differ, hidden, _ = form_vs_template(schema["definitions"], "StackConfig", template, "config.")
    assert [d for d in differ if d not in WHERE_AND_WHEN] == [
        "config.acquisition.platforms: form ['S1A', 'S1B', 'S1C'], template ['S1A']",
        "config.topsstack.filter_strength: form 0.5, template 0.6",
    ]
    assert hidden == ["config.export.formats"]


@pytest.mark.parametrize(
    ("model", "field", "default", "choices"),
    [
        ("AcquisitionConfig", "platforms", ["S1A", "S1B", "S1C"], ["S1A", "S1B", "S1C"]),
        ("TopsStackConfig", "swaths", [1, 2, 3], [1, 2, 3]),
        ("ExportConfig", "formats", ["zarr", "geotiff"], ["zarr", "geotiff", "netcdf"]),
    ],
)
def test_list_fields_are_multiple_choices_with_a_default(
    model: str, field: str, default: list[Any], choices: list[Any]
) -> None:
    spec = _schema(sbas.fn)["definitions"][model]["properties"][field]
    assert spec["type"] == "array"
    assert spec["default"] == default
    assert spec["items"]["enum"] == choices
    assert spec["minItems"] == 1


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (
            "acquisition__platforms",
            "platforms is empty; list at least one of S1A, S1B, S1C, e.g. [S1A, S1B, S1C] (or "
            "leave the field out for the default)",
        ),
        (
            "export__formats",
            "formats is empty; list at least one of zarr, geotiff, netcdf, e.g. [zarr, "
            "geotiff, netcdf] (or leave the field out for the default)",
        ),
        (
            "topsstack__swaths",
            "swaths [] must be a non-empty subset of 1, 2, 3 (IW1-IW3); remove nothing: "
            "e.g. [1, 2, 3]",
        ),
    ],
)
def test_an_empty_list_is_refused_naming_field_value_and_fix(key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(minimal(**{key: []}))
    [issue] = info.value.issues
    assert (issue.field, issue.value, issue.message) == (key.replace("__", "."), [], message)


def test_every_enumeration_of_the_configuration_is_a_choice() -> None:
    defs = _schema(sbas.fn)["definitions"]
    enums = {
        f"{model}.{prop}": spec.get("enum") or spec.get("items", {}).get("enum")
        for model, body in defs.items()
        for prop, spec in body["properties"].items()
    }
    for option in (
        "StackConfig.engine",
        "TopsStackConfig.coregistration",
        "AcquisitionConfig.polarization",
        "AcquisitionConfig.dem_source",
        "MintpyConfig.unwrap_error",
        "MintpyConfig.troposphere",
        "JobqueueConfig.kind",
    ):
        assert enums[option], option


def test_stages_are_choices_with_descriptions() -> None:
    props = _schema(sbas.fn)["properties"]
    for name, default in (("from_stage", "acquire"), ("until", "products")):
        assert props[name]["enum"] == list(STAGES) == ["acquire", "topsstack", "sbas", "products"]
        assert props[name]["default"] == default
        assert props[name]["description"]
    assert "topsstack: stackSentinel.py" in props["from_stage"]["description"]


def test_both_deployments_take_the_configuration_form() -> None:
    adhoc, update = _schema(sbas.fn), _schema(sbas_update.fn)
    assert update["properties"]["config"]["$ref"] == adhoc["properties"]["config"]["$ref"]
    assert update["definitions"] == adhoc["definitions"]
    assert update["required"] == adhoc["required"] == ["config"]
    assert update["properties"]["config"]["description"]
