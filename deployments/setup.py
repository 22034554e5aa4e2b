"""Create the work pool and the concurrency limits insarflow's deployments use.

Idempotent: run it any number of times against a Prefect server
(``python -m insarflow.deployments.setup --memory-gb 64 --gpus 1``). The server is the one
``PREFECT_API_URL`` names; without it the command refuses (Prefect would otherwise start a
temporary server of its own for this one command), and it waits ``--wait`` seconds for a
server that is still starting.

- work pool ``insarflow-process`` (type process);
- tag concurrency limits: ``gpu`` (one task per GPU), ``memory-heavy`` (resample,
  merge, unwrap: how many may run at once);
- global concurrency limit ``insarflow-memory-gb`` (slots = GB of memory for the
  topsStack lines of all runs together): each running line occupies its reservation,
  rounded up to whole GB.

The one-slot limits ``insarflow-stack-<name>`` (one run per stack) are created by the
runs themselves, on first use (``insarflow.tasks.lock.stack_slot``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.settings import get_current_settings

from insarflow.tasks.topsstack.executor import MEMORY_LIMIT

WORK_POOL = "insarflow-process"
__all__ = ["MEMORY_LIMIT", "WORK_POOL", "Limits", "setup"]


@dataclass(frozen=True)
class Limits:
    """Sizes of the limits to create."""

    gpus: int = 1
    memory_heavy: int = 2
    memory_gb: int = 16


async def setup(limits: Limits) -> list[str]:
    """Create or update everything; return what was done, one line each."""
    done: list[str] = []
    async with get_client() as client:
        try:
            await client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process"))
            done.append(f"work pool {WORK_POOL}: created")
        except ObjectAlreadyExists:
            done.append(f"work pool {WORK_POOL}: exists")
        for tag, slots in (("gpu", limits.gpus), ("memory-heavy", limits.memory_heavy)):
            # create_concurrency_limit upserts by tag
            await client.create_concurrency_limit(tag=tag, concurrency_limit=slots)
            done.append(f"tag limit {tag}: {slots}")
        try:
            existing = await client.read_global_concurrency_limit_by_name(MEMORY_LIMIT)
            if existing.limit != limits.memory_gb:
                from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

                await client.update_global_concurrency_limit(
                    MEMORY_LIMIT, GlobalConcurrencyLimitUpdate(limit=limits.memory_gb)
                )
            done.append(f"global limit {MEMORY_LIMIT}: {limits.memory_gb}")
        except ObjectNotFound:
            await client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=MEMORY_LIMIT, limit=limits.memory_gb)
            )
            done.append(f"global limit {MEMORY_LIMIT}: {limits.memory_gb} (created)")
    return done


async def wait_for_api(timeout_s: float) -> str | None:
    """Wait until the configured server answers; return why not (None: it answers)."""
    url = get_current_settings().api.url
    if not url:
        return (
            "PREFECT_API_URL is not set; point it at your server, e.g. "
            "`export PREFECT_API_URL=http://127.0.0.1:4200/api`"
        )
    deadline = time.monotonic() + timeout_s
    async with get_client() as client:
        while (error := await client.api_healthcheck()) is not None:
            if time.monotonic() > deadline:
                return (
                    f"no Prefect server answers at {url} after {timeout_s:.0f} s ({error}); "
                    "start one (`prefect server start`) or correct PREFECT_API_URL"
                )
            await asyncio.sleep(1)
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=1, help="GPU slots (tag 'gpu').")
    parser.add_argument(
        "--memory-heavy", type=int, default=2, help="Concurrent memory-heavy tasks."
    )
    parser.add_argument("--memory-gb", type=int, default=16, help="Memory budget in GB.")
    parser.add_argument(
        "--wait", type=float, default=60, help="Seconds to wait for the server to answer."
    )
    args = parser.parse_args(argv)
    problem = asyncio.run(wait_for_api(args.wait))
    if problem is not None:
        print(problem, file=sys.stderr)
        raise SystemExit(2)
    for line in asyncio.run(setup(Limits(args.gpus, args.memory_heavy, args.memory_gb))):
        print(line)


if __name__ == "__main__":
    main()
