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
from mintpy import dem_error, ifgram_inversion, reference_point, unwrap_error_phase_closure
from mintpy.cli import dem_error as dem_error_cli
from mintpy.cli import ifgram_inversion as ifgram_inversion_cli
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


# --------------------------------------------------------------------- scheduler_cluster


def test_canary_mintpy_reaches_dask_through_dask_cluster() -> None:
    """Both parallel steps look DaskCluster up in its module when they run, and their command
    lines size it with DaskCluster.format_num_worker; DaskCluster.run splits the box, scales
    the cluster it opened, and submits and collects the chunks with its own methods."""
    for module in (ifgram_inversion, dem_error):
        assert module.cluster is cluster
        assert "cluster.DaskCluster(inps.cluster, inps.numWorker" in inspect.getsource(module)
    for cli in (ifgram_inversion_cli, dem_error_cli):
        source = inspect.getsource(cli)
        assert "cluster.DaskCluster.format_num_worker(inps.cluster, inps.numWorker)" in source
        assert "inps.numWorker == '1'" in source  # one chunk: no Dask
    run = inspect.getsource(cluster.DaskCluster.run)
    for call in ("split_box2sub_boxes(", "self.cluster.scale(", "Client(self.cluster)"):
        assert call in run
    assert "self.submit_job(func, func_data, sub_boxes)" in run
    assert "self.collect_result(futures, results, box, submission_time)" in run
    assert "self.cluster.close()" in inspect.getsource(cluster.DaskCluster.close)


@pytest.fixture
def restore_dask_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "DaskCluster", cluster.DaskCluster)


@pytest.mark.usefixtures("restore_dask_cluster")
def test_scheduler_cluster_uses_the_scheduler_threads_and_leaves_it_running() -> None:
    import dask.distributed

    with dask.distributed.LocalCluster(
        n_workers=2, threads_per_worker=2, processes=False, dashboard_address="127.0.0.1:0"
    ) as local:
        mintpy_runner.scheduler_cluster(local.scheduler_address)
        # numWorker from the scheduler's 4 threads, whatever the cfg or this machine says
        assert cluster.DaskCluster.format_num_worker("local", "all") == 4
        assert cluster.DaskCluster.format_num_worker(None, "3") == 3  # no cluster: as MintPy

        def chunk(box: list[int], value: float) -> tuple[np.ndarray, list[int]]:
            x0, y0, x1, y1 = box
            return np.full((y1 - y0, x1 - x0), value * x0, np.float32), box

        dask_cluster = cluster.DaskCluster("local", "all")
        dask_cluster.open()
        out = dask_cluster.run(chunk, {"box": [0, 0, 40, 3], "value": 2.0}, [np.zeros((3, 40))])
        dask_cluster.close()
        assert dask_cluster.num_worker == 4
        assert [float(v) for v in out[0][0, ::10]] == [0.0, 20.0, 40.0, 60.0]
        with dask.distributed.Client(local) as client:  # still serving
            assert client.submit(sum, [1, 2]).result() == 3


@pytest.mark.usefixtures("restore_dask_cluster")
def test_scheduler_without_workers_is_named() -> None:
    import dask.distributed

    with dask.distributed.LocalCluster(
        n_workers=0, processes=False, dashboard_address="127.0.0.1:0"
    ) as empty:
        mintpy_runner.scheduler_cluster(empty.scheduler_address)
        with pytest.raises(RuntimeError, match=r"compute\.scheduler_address\) has no workers"):
            cluster.DaskCluster.format_num_worker("local", "all")


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
