"""``deployments.params`` (a configuration file to a run's parameters) and the checks
``deployments.setup`` makes before it touches a server, as the README's commands run them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from insarflow.config import dump_config
from tests.conftest import REPO_ROOT

from .conftest import MakeConfig, clean_env, free_port


def _module(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env=clean_env(PYTHONPATH=str(REPO_ROOT), PREFECT_HOME=str(cwd / "prefect"), **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_params_are_the_configuration_with_an_absolute_work_dir(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(Path("relative/work"), 5)
    (tmp_path / "mystack.yaml").write_text(dump_config(config))
    done = _module(["insarflow.deployments.params", "mystack.yaml"], tmp_path)
    assert done.returncode == 0, done.stderr
    params = json.loads(done.stdout)
    assert params == {
        "config": {
            **config.model_dump(mode="json"),
            "work_dir": str(tmp_path / "relative" / "work"),
        }
    }


def test_params_refuse_a_bad_file_naming_field_value_and_fix(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    text = dump_config(make_config(tmp_path / "work", 5)).replace("track: 142", "track: 1420")
    (tmp_path / "mystack.yaml").write_text(text)
    done = _module(["insarflow.deployments.params", "mystack.yaml"], tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert "acquisition.track (got 1420): " in done.stderr
    assert "fix: lower it" in done.stderr

    missing = _module(["insarflow.deployments.params", "nothere.yaml"], tmp_path)
    assert (missing.returncode, missing.stdout) == (2, "")
    assert "write one with `insarflow config > nothere.yaml`" in missing.stderr


def test_setup_refuses_without_a_server_url(tmp_path: Path) -> None:
    # Without PREFECT_API_URL, Prefect would start a temporary server for this one command.
    done = _module(["insarflow.deployments.setup"], tmp_path)
    assert done.returncode == 2
    assert "PREFECT_API_URL is not set" in done.stderr
    assert not (tmp_path / "prefect" / "prefect.db").exists()


def test_setup_names_the_server_that_does_not_answer(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/api"
    done = _module(["insarflow.deployments.setup", "--wait", "1"], tmp_path, PREFECT_API_URL=url)
    assert done.returncode == 2
    assert f"no Prefect server answers at {url} after 1 s" in done.stderr
