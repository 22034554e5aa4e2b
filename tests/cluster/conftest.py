"""A single-node SLURM for the tests of this folder (see :mod:`tests.support.slurm`).

Without the Debian packages slurm-wlm and munge (or without root) the tests skip with the
reason; with ``INSARFLOW_REQUIRE_SLURM=1`` (as in ``.ci/run``) they fail instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.slurm import SingleNodeSlurm, single_node_slurm, unavailable


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SingleNodeSlurm]:
    """munged, slurmctld and slurmd for one test module, found through ``SLURM_CONF``;
    stopped by PID at its end, jobs cancelled first."""
    reason = unavailable()
    if reason:
        if os.environ.get("INSARFLOW_REQUIRE_SLURM") == "1":
            pytest.fail(f"INSARFLOW_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    with (
        single_node_slurm(tmp_path_factory.mktemp("slurm")) as cluster,
        pytest.MonkeyPatch.context() as patch,
    ):
        for key, value in cluster.env().items():
            patch.setenv(key, value)
        yield cluster
