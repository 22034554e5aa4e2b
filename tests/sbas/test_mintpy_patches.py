"""The MintPy patches of ``insarflow.tasks.mintpy_runner``, against the installed MintPy.

Each ``test_canary_*`` fails when MintPy stops doing what a patch relies on (the bug it works
around is fixed, or the patched function moved or changed): then revisit that patch and the
upper bound on mintpy in pyproject.toml. The other tests show each patch doing its job.
"""

from __future__ import annotations

import inspect
import random
from pathlib import Path

import numpy as np
import pytest
from mintpy import reference_point, unwrap_error_phase_closure
from mintpy.objects import cluster, conncomp
from mintpy.utils import plot, writefile

from insarflow.tasks import mintpy_runner


def _one_region() -> conncomp.connectComponent:
    cc = conncomp.connectComponent(
        conncomp=np.ones((40, 50), dtype=np.bool_),
        metadata={"LENGTH": "40", "WIDTH": "50", "REF_Y": "20", "REF_X": "25"},
    )
    cc.label(min_area=10)
    return cc


def _no_ambiguity_file(tmp_path: Path) -> str:
    path = str(tmp_path / "numTriNonzeroIntAmbiguity.h5")
    meta = {"FILE_TYPE": "mask", "UNIT": "1", "LENGTH": "20", "WIDTH": "30"}
    writefile.write(np.zeros((20, 30), np.float32), out_file=path, metadata=meta)
    return path


@pytest.fixture
def restore_mintpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Undo the patches after the test (they replace module attributes)."""
    name = "plot_num_triplet_with_nonzero_integer_ambiguity"
    monkeypatch.setattr(plot, name, getattr(plot, name))
    find = conncomp.connectComponent.find_mst_bridge
    monkeypatch.setattr(conncomp.connectComponent, "find_mst_bridge", find)


# ------------------------------------------------------------------ seed_reference_point


def test_canary_reference_point_draws_from_the_stdlib_random() -> None:
    assert reference_point.random is random
    mask = np.zeros((30, 40), dtype=np.uint8)
    mask[5:25, 10:30] = 1
    picks = []
    for _ in range(2):
        mintpy_runner.seed_reference_point()
        picks.append(reference_point.random_select_reference_yx(mask, print_msg=False))
    assert picks[0] == picks[1]
    assert mask[picks[0]] == 1


# -------------------------------------------------------------------- local_only_cluster


def test_canary_mintpy_takes_local_cluster_from_dask_when_it_opens() -> None:
    assert not hasattr(cluster, "LocalCluster")  # not bound at import: the patch reaches it
    source = inspect.getsource(cluster.DaskCluster.open)
    assert "from dask.distributed import LocalCluster" in source
    assert "LocalCluster()" in source


def test_local_cluster_listens_on_this_machine_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dask.distributed

    monkeypatch.setattr(dask.distributed, "LocalCluster", dask.distributed.LocalCluster)
    mintpy_runner.local_only_cluster(tmp_path)
    with dask.distributed.LocalCluster(n_workers=1, processes=False, protocol="tcp") as local:
        assert local.scheduler_address.startswith("tcp://127.0.0.1:")
        assert local.dashboard_link.startswith("http://127.0.0.1:")
    assert (tmp_path / "dask-scratch").is_dir()


# --------------------------------------------------------- skip_empty_ambiguity_histogram


def test_canary_ambiguity_histogram_fails_without_ambiguities(tmp_path: Path) -> None:
    assert unwrap_error_phase_closure.pp is plot
    source = inspect.getsource(unwrap_error_phase_closure)
    assert "pp.plot_num_triplet_with_nonzero_integer_ambiguity(" in source
    with pytest.raises(ValueError, match="bins"):
        plot.plot_num_triplet_with_nonzero_integer_ambiguity(_no_ambiguity_file(tmp_path))


@pytest.mark.usefixtures("restore_mintpy")
def test_empty_ambiguity_histogram_is_skipped(tmp_path: Path) -> None:
    mintpy_runner.skip_empty_ambiguity_histogram()
    path = _no_ambiguity_file(tmp_path)
    assert plot.plot_num_triplet_with_nonzero_integer_ambiguity(path) is None


# --------------------------------------------------------------- no_bridge_for_one_region


def test_canary_bridging_one_region_fails() -> None:
    cc = _one_region()
    assert cc.numLabel == 1
    with pytest.raises(IndexError):
        cc.find_mst_bridge()


@pytest.mark.usefixtures("restore_mintpy")
def test_one_region_needs_no_bridge() -> None:
    mintpy_runner.no_bridge_for_one_region()
    cc = _one_region()
    assert cc.find_mst_bridge() == []
    assert cc.num_bridge == 0
