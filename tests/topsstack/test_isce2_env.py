"""ISCE2's own environment: discovery, the env_script probe, and its errors."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from insarflow.tasks.isce2_env import (
    IsceNotFoundError,
    find_stack_sentinel,
    probe_isce2,
    record_isce2,
    recorded_isce2_version,
    with_topsstack,
)
from tests.support.fake_isce2 import fake_isce2


def _executable(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_find_on_path_then_in_isce_stack(tmp_path: Path) -> None:
    on_path = _executable(tmp_path / "bin" / "stackSentinel.py", "")
    assert find_stack_sentinel({"PATH": f"/nonexistent{os.pathsep}{on_path.parent}"}) == on_path
    in_stack = _executable(tmp_path / "isce2" / "topsStack" / "stackSentinel.py", "")
    found = find_stack_sentinel({"PATH": "/nonexistent", "ISCE_STACK": str(tmp_path / "isce2")})
    assert found == in_stack
    with pytest.raises(IsceNotFoundError, match=r"nor in \$ISCE_STACK/topsStack \(/opt/isce\)"):
        find_stack_sentinel({"PATH": str(tmp_path), "ISCE_STACK": "/opt/isce"})


def test_with_topsstack_puts_it_on_path_and_pythonpath(tmp_path: Path) -> None:
    script = tmp_path / "isce2" / "topsStack" / "stackSentinel.py"
    env = with_topsstack({"PATH": "/usr/bin", "PYTHONPATH": "/x"}, script)
    assert env["PATH"] == os.pathsep.join([str(script.parent), "/usr/bin"])
    assert env["PYTHONPATH"] == os.pathsep.join([str(tmp_path / "isce2"), "/x"])
    assert with_topsstack(env, script) == env


def test_env_script_gives_isce2_its_own_environment(tmp_path: Path) -> None:
    env_sh = fake_isce2(tmp_path / "prefix")
    found = probe_isce2(env_sh, log_path=tmp_path / "probe.log", base_env=dict(os.environ))
    assert found.version == "2.6.5"
    assert found.stack_sentinel == tmp_path / "prefix/share/isce2/topsStack/stackSentinel.py"
    # The script's variables, not insarflow's, are what ISCE2 commands get.
    assert found.env["PYTHONPATH"].split(os.pathsep)[-1] == str(tmp_path / "prefix/packages")
    assert found.env["PATH"].split(os.pathsep)[0] == str(tmp_path / "prefix/bin")
    log = (tmp_path / "probe.log").read_text()
    assert "isce2 2.6.5" in log
    assert "PYTHONPATH" not in log  # the environment itself never reaches a log


def test_secrets_in_the_environment_stay_out_of_the_log(tmp_path: Path) -> None:
    env_sh = fake_isce2(tmp_path / "prefix")
    base = {**os.environ, "EARTHDATA_PASSWORD": "s3cr3t-planted"}
    probe_isce2(env_sh, log_path=tmp_path / "probe.log", base_env=base)
    assert "s3cr3t-planted" not in (tmp_path / "probe.log").read_text()


def test_missing_gdal_array_is_named_with_the_fix(tmp_path: Path) -> None:
    env_sh = fake_isce2(tmp_path / "prefix", gdal_array=False)
    with pytest.raises(IsceNotFoundError) as info:
        probe_isce2(env_sh, log_path=tmp_path / "probe.log", base_env=dict(os.environ))
    message = str(info.value)
    assert f"isce2.env_script {env_sh}" in message
    assert "gdal_array" in message
    assert "make isce2" in message


def test_missing_snaphu_is_named_with_the_fix(tmp_path: Path) -> None:
    env_sh = fake_isce2(tmp_path / "prefix", snaphu=False)
    with pytest.raises(IsceNotFoundError) as info:
        probe_isce2(env_sh, log_path=tmp_path / "probe.log", base_env=dict(os.environ))
    message = str(info.value)
    assert f"isce2.env_script {env_sh}" in message
    assert "cannot import snaphu (ImportError: No module named snaphu)" in message
    assert "pip install snaphu" in message


def test_missing_env_script_is_named(tmp_path: Path) -> None:
    with pytest.raises(
        IsceNotFoundError, match=r"isce2.env_script: .*nowhere/env.sh does not exist"
    ):
        probe_isce2(tmp_path / "nowhere/env.sh", log_path=tmp_path / "probe.log")


def test_without_script_the_current_environment_is_probed(tmp_path: Path) -> None:
    """No env_script: ISCE2 is taken from PATH; here python3 cannot import isce."""
    blocker = tmp_path / "no_isce"
    blocker.mkdir()
    (blocker / "isce.py").write_text("raise ImportError('isce (ISCE2) is not installed')\n")
    base = {**os.environ, "PYTHONPATH": str(blocker)}
    with pytest.raises(IsceNotFoundError) as info:
        probe_isce2(None, log_path=tmp_path / "probe.log", base_env=base)
    assert "the current environment (PATH)" in str(info.value)
    assert "isce (ISCE2) is not installed" in str(info.value)


def test_version_record_round_trips(tmp_path: Path) -> None:
    env_sh = fake_isce2(tmp_path / "prefix", version="2.6.5")
    found = probe_isce2(env_sh, log_path=tmp_path / "probe.log", base_env=dict(os.environ))
    record_isce2(found, tmp_path / "isce2.json")
    assert recorded_isce2_version(tmp_path / "isce2.json") == "2.6.5"
    assert recorded_isce2_version(tmp_path / "absent.json") is None
