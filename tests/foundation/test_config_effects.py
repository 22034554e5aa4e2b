"""Every topsstack.* field (and acquisition.polarization, area) reaches stackSentinel.py's
command line through the topsStack stage, not only the model."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.acquisition.test_bursts import PIXELS, TWO_BURSTS, _config


def test_topsstack_fields_reach_stacksentinel(
    tmp_path: Path, fixtures_dir: Path, prefect_harness: None
) -> None:
    from insarflow.config import StackConfig
    from insarflow.flows.stages import AcquireResult, topsstack_stage
    from insarflow.tasks.shell import CommandError

    ion = tmp_path / "ion_param.txt"
    ion.write_text("")
    data = _config(tmp_path, fixtures_dir, TWO_BURSTS)
    data["inputs"] = {}
    data["acquisition"]["polarization"] = "vh"  # type: ignore[index]
    data["topsstack"] = {
        "swaths": [2, 1],
        "reference_date": "2021-04-01",
        "coregistration": "NESD",
        "connections": 4,
        "azimuth_looks": 2,
        "range_looks": 7,
        "filter_strength": 0.3,
        "num_overlap_connections": 2,
        "esd_coherence_threshold": 0.7,
        "use_gpu": True,
        "ion_param_file": str(ion),
    }
    data["compute"] = {"gpus": 1}
    config = StackConfig.model_validate(data)
    recorded = tmp_path / "args.txt"
    stub = tmp_path / "isce2" / "share" / "isce2" / "topsStack" / "stackSentinel.py"
    stub.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {recorded}\nexit 3\n")
    acquired = AcquireResult(
        dates=["20210401"], safe_files=[fixtures_dir / PIXELS], dem=tmp_path / "dem.wgs84"
    )
    with pytest.raises(CommandError):
        topsstack_stage(config, acquired)
    args = recorded.read_text().splitlines()
    flags = {flag: args[args.index(flag) + 1] for flag in ("-n", "-m", "-C", "-c", "-z", "-r")}
    assert flags == {"-n": "1 2", "-m": "20210401", "-C": "NESD", "-c": "4", "-z": "2", "-r": "7"}
    assert args[args.index("-f") + 1] == "0.3"
    assert args[args.index("-O") + 1] == "2" and args[args.index("-e") + 1] == "0.7"
    assert args[args.index("-p") + 1] == "vh"
    assert args[args.index("-b") + 1] == "46.95 47.05 11.6 11.9"
    assert "--useGPU" in args
    assert args[args.index("--param_ion") + 1] == str(ion)
