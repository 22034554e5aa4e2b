"""What ``pip install`` puts into site-packages: one ``insarflow`` package, nothing generic."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "insarflow", "flows", "tasks", "deployments")


def test_the_wheel_holds_one_insarflow_namespace(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:  # a copy, so the build leaves nothing in the working tree
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(REPO / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path / "dist"), str(src)],
        check=True,
        timeout=300,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("insarflow-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert top_level == {"insarflow"}
    for module in (
        "insarflow/config.py",
        "insarflow/cli.py",
        "insarflow/engine.py",
        "insarflow/flows/sbas.py",
        "insarflow/tasks/topsstack/executor.py",
        "insarflow/deployments/setup.py",
        "insarflow/simulator/stack_sentinel.py",
    ):
        assert module in names, module
    # the simulator is its own subpackage, not part of the stage modules
    assert not any(name.startswith("insarflow/tasks/simulator") for name in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "insarflow = insarflow.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
