"""Shared test fixtures.

The real-data fixtures live outside the repository (``../shared/fixtures`` or
``$INSARFLOW_FIXTURES``). Tests that need them skip when absent, unless
``INSARFLOW_REQUIRE_FIXTURES=1`` (set by ``.ci/run``) turns absence into an error.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import insarflow  # noqa: F401  # first: it sets Prefect's logging up before Prefect is imported

REPO_ROOT = Path(__file__).resolve().parent.parent


def _fixtures_path() -> Path:
    override = os.environ.get("INSARFLOW_FIXTURES")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Root of the real-data fixtures; skip (or fail under CI) when missing."""
    path = _fixtures_path()
    if not path.is_dir():
        message = (
            f"real-data fixtures not found at {path}; put ../shared/fixtures beside the "
            "repository or set INSARFLOW_FIXTURES"
        )
        if os.environ.get("INSARFLOW_REQUIRE_FIXTURES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A real Prefect engine with a throwaway API database (no server configured)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# Test folders whose session fixtures are expensive and shared by several files (a reference
# run of the whole flow), or that must not run beside each other (cluster: one single-node
# SLURM on this machine at a time; the SLURM benchmark's smoke test joins the group): under
# pytest-xdist they run on one worker as a whole.
_SHARED_SESSION_FOLDERS = {"reliability", "cluster"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Group tests for pytest-xdist's ``--dist loadgroup`` (``make test`` runs 2 workers): a
    file stays on one worker, so its module fixtures (a server, a deployed stack, a demo run)
    are built once; a folder in ``_SHARED_SESSION_FOLDERS`` stays on one worker as a whole.

    Then order the groups as the workers should take them (``make test`` passes
    ``--no-loadscope-reorder`` so xdist keeps this order): the real-ISCE2 tests first, one
    test each but the longest by far (10-17 minutes), then the larger groups before the
    smaller. Left to xdist's own order (most tests first) the real-ISCE2 files came last,
    and a worker that had just taken one could take the other too (it asks for more work
    with 2 tests pending), running both one after the other at the end of the run."""
    tests_dir = REPO_ROOT / "tests"
    groups: dict[int, str] = {}
    for item in items:
        marker = item.get_closest_marker("xdist_group")
        if marker is None:
            parts = item.path.relative_to(tests_dir).parts
            group = parts[0] if parts[0] in _SHARED_SESSION_FOLDERS else "/".join(parts)
            item.add_marker(pytest.mark.xdist_group(group))
        else:
            group = str(marker.args[0] if marker.args else marker.kwargs["name"])
        groups[id(item)] = group
    sizes = Counter(groups.values())
    first = {g: i for i, g in reversed(list(enumerate(groups[id(it)] for it in items)))}
    real_isce2 = {groups[id(it)] for it in items if it.get_closest_marker("isce2")}
    items.sort(
        key=lambda it: (
            groups[id(it)] not in real_isce2,
            -sizes[groups[id(it)]],
            first[groups[id(it)]],
        )
    )
