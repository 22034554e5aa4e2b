"""Every mintpy.* field has its effect through the sbas stage: the pre-flight it runs and the
smallbaselineApp.cfg it hands to MintPy, read back with MintPy's own parser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .synthetic import SyntheticStack


def _stack_config(work_dir: Path, mintpy: dict[str, Any]) -> Any:
    from insarflow.config import StackConfig

    return StackConfig.model_validate(
        {
            "name": "fields",
            "work_dir": str(work_dir),
            "area": {"bbox": [57.5, 57.7, 14.8, 15.0]},
            "acquisition": {"track": 168, "start": "2021-04-01", "end": "2021-06-30"},
            "mintpy": {"plot": False, **mintpy},
        }
    )


def _break_one_pair(stack: SyntheticStack) -> str:
    bad = stack.pairs[2]
    (stack.stack_dir / "merged" / "interferograms" / bad / "filt_fine.cor").unlink()
    return bad


@pytest.fixture
def no_mintpy_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stage stops after writing smallbaselineApp.cfg: no MintPy step runs, so the search
    for MintPy's outputs fails at once. What MintPy makes of the cfg is tested elsewhere."""
    import insarflow.tasks.sbas

    monkeypatch.setattr(insarflow.tasks.sbas, "mintpy_steps", lambda **_: [])


def test_mintpy_fields_reach_smallbaselineapp_cfg(
    stack: SyntheticStack, no_mintpy_steps: None, prefect_harness: None
) -> None:
    from mintpy.utils import readfile

    from insarflow.flows.stages import sbas_stage

    bad = _break_one_pair(stack)
    config = _stack_config(
        stack.stack_dir.parent,
        {
            "reference_point": {"lat": 57.59, "lon": 14.87},
            "reference_date": "2021-04-25",
            "unwrap_error": "phase_closure",
            "troposphere": "height_correlation",
            "max_memory_gb": 6.5,
            "extra": {"mintpy.deramp": "linear", "mintpy.networkInversion.minTempCoh": "0.6"},
            "allow_missing_interferograms": True,
        },
    )
    with pytest.raises(FileNotFoundError, match="MintPy outputs missing"):
        sbas_stage(config)
    # allow_missing_interferograms: the incomplete pair was moved aside, the stage went on
    excluded = stack.stack_dir / "merged" / "interferograms.excluded" / bad
    assert (excluded / "filt_fine.unw").is_file()
    cfg = readfile.read_template(str(config.paths.mintpy / "smallbaselineApp.cfg"))
    wanted = {
        "mintpy.reference.lalo": "57.59,14.87",
        "mintpy.reference.date": "20210425",
        "mintpy.unwrapError.method": "phase_closure",
        "mintpy.troposphericDelay.method": "height_correlation",
        "mintpy.compute.maxMemory": "6.5",
        "mintpy.deramp": "linear",
        "mintpy.networkInversion.minTempCoh": "0.6",
    }
    assert {key: cfg[key] for key in wanted} == wanted


def test_incomplete_interferogram_stops_the_stage_unless_allowed(
    stack: SyntheticStack, no_mintpy_steps: None, prefect_harness: None
) -> None:
    from insarflow.flows.stages import sbas_stage
    from insarflow.tasks.sbas import PreflightError

    bad = _break_one_pair(stack)
    config = _stack_config(stack.stack_dir.parent, {})  # allow_missing_interferograms: false
    with pytest.raises(PreflightError, match=f"{bad}: filt_fine.cor missing"):
        sbas_stage(config)
    assert (stack.stack_dir / "merged" / "interferograms" / bad).is_dir()
    assert not (config.paths.mintpy / "smallbaselineApp.cfg").exists()


def test_scheduler_address_reaches_mintpy_steps(
    stack: SyntheticStack, monkeypatch: pytest.MonkeyPatch, prefect_harness: None
) -> None:
    """compute.scheduler_address: the cfg asks for MintPy's cluster and each step's
    environment names the scheduler (what the runner connects to, see test_mintpy_dask)."""
    from mintpy.utils import readfile

    import insarflow.tasks.sbas
    from insarflow.flows.stages import sbas_stage
    from insarflow.tasks.mintpy_runner import SCHEDULER_ENV

    envs: dict[str, dict[str, str] | None] = {}

    def step(name: str, *args: Any, env: dict[str, str] | None = None, **kwargs: Any) -> None:
        envs[name] = env

    monkeypatch.setattr(insarflow.tasks.sbas, "mintpy_steps", lambda **_: ["invert_network"])
    monkeypatch.setitem(insarflow.tasks.sbas.MINTPY_STEP_TASKS, "invert_network", step)
    config = _stack_config(stack.stack_dir.parent, {})
    config.compute.scheduler_address = "tcp://10.0.0.5:8786"
    with pytest.raises(FileNotFoundError, match="MintPy outputs missing"):
        sbas_stage(config)
    assert envs == {"invert_network": {SCHEDULER_ENV: "tcp://10.0.0.5:8786"}}
    cfg = readfile.read_template(str(config.paths.mintpy / "smallbaselineApp.cfg"))
    assert (cfg["mintpy.compute.cluster"], cfg["mintpy.compute.numWorker"]) == ("local", "all")
