"""The CLI through its installed entry point."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.fake_isce2 import fake_isce2

EXE = shutil.which("insarflow", path=str(Path(sys.executable).parent))


def run(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    assert EXE, "the insarflow console script is not installed in this environment"
    return subprocess.run(
        [EXE, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            "COLUMNS": "200",
            "PATH": str(Path(sys.executable).parent),
            "HOME": str(Path.home()),
            **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
            **(env or {}),
        },
    )


def test_version() -> None:
    out = run("--version")
    assert out.returncode == 0
    assert out.stdout.startswith("insarflow ")


def test_config_round_trips_through_validate(tmp_path: Path) -> None:
    template = run("config")
    assert template.returncode == 0
    # validate also checks what a run needs: Earthdata credentials and ISCE2.
    env_sh = fake_isce2(tmp_path / "isce2")
    text = template.stdout.replace("  env_script: null", f"  env_script: {env_sh}")
    env = {"EARTHDATA_USERNAME": "u", "EARTHDATA_PASSWORD": "p"}
    checked = run("validate", "-", stdin=text, env=env)
    assert checked.returncode == 0, checked.stderr
    assert "valid" in checked.stdout
    assert "ISCE2 2.6.5" in checked.stdout


def test_validate_without_isce2_says_how_to_get_it() -> None:
    """The template's engine is isce2; here no python3 on PATH imports isce."""
    checked = run("validate", "-", stdin=run("config").stdout)
    assert checked.returncode == 2
    err = " ".join(checked.stderr.split())
    assert "isce2.env_script" in err
    assert "cannot import isce" in err
    assert "make isce2 ISCE2_SOURCE=" in err
    assert "Traceback" not in err


def test_schema() -> None:
    out = run("config", "--schema")
    schema = json.loads(out.stdout)
    assert schema["title"] == "StackConfig"
    assert schema["additionalProperties"] is False


def test_validate_prints_all_four_errors_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: t142\nwork_dir: /tmp/t142\nengine: simulator\n"
        "area: {bbox: [117.95, 116.5, 34.0, 34.6]}\n"  # W E S N order, and south > north
        "acquisition: {track: 142, start: 2025-04-15, end: 2024-12-01}\n"
        "topsstack: {swaths: [1, 2, 4]}\n"
    )
    out = run("validate", str(bad))
    assert out.returncode == 2
    err = " ".join(out.stderr.split())
    assert "4 problem(s)" in err
    assert "looks like W E S N order" in err
    assert "south 117.95 is not below north 116.5" in err
    assert "start 2025-04-15 is not before end 2024-12-01: swap them" in err
    assert "remove [4]" in err


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_checks_leave_no_trace_in_the_work_dir(tmp_path: Path, command: str) -> None:
    """Prefect creates its home when the checks import it: not in the work directory (no
    Prefect server configured, so a run would keep its database there)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"name: s\nwork_dir: {tmp_path / 'work'}\nengine: simulator\n"
        "area: {bbox: [34.0, 34.6, 116.5, 117.95]}\n"
        "acquisition: {track: 142, start: 2025-04-06, end: 2025-05-12}\n"
        "simulator: {dates: 4}\n"
    )
    out = run(command, str(cfg), env={"PREFECT_PROFILES_PATH": str(tmp_path / "none.toml")})
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "work").exists()


def test_validate_missing_file(tmp_path: Path) -> None:
    out = run("validate", str(tmp_path / "nope.yaml"))
    assert out.returncode == 2
    assert "not found" in out.stderr


@pytest.mark.parametrize("coreg,lines", [("NESD", 59), ("geometry", 44)])
def test_plan_counts_lines_like_stacksentinel(tmp_path: Path, coreg: str, lines: int) -> None:
    # 4 synthetic dates, 2 connections: the real nesd_4dates fixture has 59 lines.
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "name: s\nwork_dir: /tmp/s\nengine: simulator\n"
        "area: {bbox: [34.0, 34.6, 116.5, 117.95]}\n"
        "acquisition: {track: 142, start: 2025-04-06, end: 2025-05-12}\n"
        f"topsstack: {{coregistration: {coreg}, connections: 2, num_overlap_connections: 3}}\n"
        "simulator: {dates: 4}\n"
    )
    out = run("plan", str(cfg))
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert f"total │ {lines}" in text
    assert "4 dates 20250406..20250512" in text


def test_a_run_without_a_server_allows_its_temporary_server_time_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With PREFECT_HOME set (as CI does) and no server configured, a run still starts its own
    temporary server, and on a busy machine that takes longer than Prefect's 20 s default."""
    from insarflow.console import isolate_prefect

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", raising=False)
    monkeypatch.setenv("PREFECT_PROFILES_PATH", str(tmp_path / "no-profiles.toml"))
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    assert isolate_prefect(tmp_path / "work") is None  # the given home is kept
    assert os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "120"

    monkeypatch.delenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert isolate_prefect(tmp_path / "work") is None
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" not in os.environ
