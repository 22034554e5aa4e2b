"""Fixtures: a small synthetic MintPy work directory (see ``synthetic.py``)."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .synthetic import SyntheticMintpy, build_mintpy_dir


@pytest.fixture(scope="session")
def _pristine_mintpy(tmp_path_factory: pytest.TempPathFactory) -> SyntheticMintpy:
    return build_mintpy_dir(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture
def synthetic_mintpy(tmp_path: Path, _pristine_mintpy: SyntheticMintpy) -> SyntheticMintpy:
    """A private copy of the synthetic MintPy directory (tests may modify it)."""
    target = tmp_path / "work" / "mintpy"
    shutil.copytree(_pristine_mintpy.mintpy_dir, target)
    return dataclasses.replace(_pristine_mintpy, mintpy_dir=target)


MintpyFactory = Callable[..., SyntheticMintpy]


@pytest.fixture
def mintpy_factory(tmp_path: Path) -> MintpyFactory:
    """Build a synthetic MintPy directory of a chosen size under ``tmp_path``."""
    counter = iter(range(1000))

    def make(**kwargs: Any) -> SyntheticMintpy:
        return build_mintpy_dir(tmp_path / f"factory{next(counter)}", **kwargs)

    return make
