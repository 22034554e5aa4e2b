"""Run one flow of a stack in this process, for the per-stack concurrency test.

``python -m tests.orchestration.slot_runner sbas|update CONFIG.yaml GATE_DIR``

``sbas`` runs the ad-hoc flow up to the acquire stage, whose entry is gated: it appends
``enter <stack>`` to ``GATE_DIR/events``, waits until ``GATE_DIR/open`` exists, acquires,
then appends ``leave <stack>``. ``update`` runs the update flow. The final state's name
is printed as ``STATE: <name>``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import insarflow.flows.sbas
from insarflow.config import StackConfig, load_config
from insarflow.flows.stages import AcquireResult
from insarflow.flows.update import sbas_update

GATE_TIMEOUT_S = 300


def _gated(gate: Path) -> None:
    acquire = insarflow.flows.sbas.acquire_stage

    def acquire_when_open(config: StackConfig) -> AcquireResult:
        with (gate / "events").open("a") as events:
            events.write(f"enter {config.name}\n")
        deadline = time.monotonic() + GATE_TIMEOUT_S
        while not (gate / "open").exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{gate / 'open'} did not appear")
            time.sleep(0.2)
        result = acquire(config)
        with (gate / "events").open("a") as events:
            events.write(f"leave {config.name}\n")
        return result

    insarflow.flows.sbas.acquire_stage = acquire_when_open  # type: ignore[assignment]


def main(kind: str, config_path: str, gate: str) -> None:
    config = load_config(Path(config_path))
    if kind == "sbas":
        _gated(Path(gate))
        state = insarflow.flows.sbas.sbas(config, until="acquire", return_state=True)
    else:
        state = sbas_update(config, return_state=True)
    print(f"STATE: {state.name}", flush=True)
    sys.exit(0 if state.is_completed() else 1)


if __name__ == "__main__":
    main(*sys.argv[1:])
