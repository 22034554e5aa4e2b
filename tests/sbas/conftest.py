"""Fixtures for the MintPy stage: a synthetic topsStack and an environment without ISCE2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .synthetic import SyntheticStack, make_topsstack


@pytest.fixture
def stack(tmp_path: Path, fixtures_dir: Path) -> SyntheticStack:
    """A fresh 6-date, 12-interferogram, 40 x 60 pixel topsStack work dir."""
    return make_topsstack(tmp_path, fixtures_dir)


@pytest.fixture(scope="session")
def no_isce_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment variables under which ``import isce`` fails, whatever is installed.

    Modules named like ISCE2's top-level packages come first on PYTHONPATH and raise
    ImportError, so MintPy runs exactly as on a machine without ISCE2.
    """
    blocker = tmp_path_factory.mktemp("no_isce")
    for name in ("isce", "isceobj", "iscesys", "stdproc", "zerodop"):
        (blocker / f"{name}.py").write_text(
            f"raise ImportError('{name} (ISCE2) is not available in this environment')\n",
            encoding="utf-8",
        )
    path = os.pathsep.join(p for p in (str(blocker), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}
