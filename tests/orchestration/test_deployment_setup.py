"""The work pool and concurrency limits are created, and creating them again is harmless."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import suppress

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from insarflow.deployments.setup import MEMORY_LIMIT, WORK_POOL, Limits, setup
from tests.conftest import REPO_ROOT


async def _read() -> tuple[str, dict[str, int], int]:
    async with get_client() as client:
        pool = await client.read_work_pool(WORK_POOL)
        tags = {
            tag: (await client.read_concurrency_limit_by_tag(tag)).concurrency_limit
            for tag in ("gpu", "memory-heavy")
        }
        memory = await client.read_global_concurrency_limit_by_name(MEMORY_LIMIT)
        return pool.type, tags, memory.limit


async def _remove_limits() -> None:
    async with get_client() as client:
        for tag in ("gpu", "memory-heavy"):
            with suppress(ObjectNotFound):
                await client.delete_concurrency_limit_by_tag(tag)
        with suppress(ObjectNotFound):
            await client.delete_global_concurrency_limit_by_name(MEMORY_LIMIT)


@pytest.fixture
def server_limits(prefect_harness: None) -> Iterator[None]:
    """The limits setup creates, removed afterwards: the harness's server is shared by the
    session, and a tag limit left there would throttle every later test's lines (and,
    without a lease reaper on that server, wait forever on slots of runs a test killed)."""
    yield
    asyncio.run(_remove_limits())


def test_setup_is_idempotent(server_limits: None) -> None:
    first = asyncio.run(setup(Limits(gpus=1, memory_heavy=2, memory_gb=16)))
    second = asyncio.run(setup(Limits(gpus=2, memory_heavy=3, memory_gb=24)))
    assert "work pool insarflow-process: exists" in second
    assert any("created" in line for line in first)
    kind, tags, memory = asyncio.run(_read())
    assert kind == "process"
    assert tags == {"gpu": 2, "memory-heavy": 3}
    assert memory == 24


def test_prefect_yaml_uses_anchors_and_no_deployment_wide_limit() -> None:
    text = (REPO_ROOT / "prefect.yaml").read_text()
    assert "&process_pool" in text and "*process_pool" in text
    spec = yaml.safe_load(text)
    names = {d["name"]: d for d in spec["deployments"]}
    assert set(names) == {"sbas-adhoc", "sbas-update"}
    assert names["sbas-update"]["schedules"][0]["cron"]
    assert "schedules" not in names["sbas-adhoc"]
    for dep in names.values():
        # one run per stack comes from the flows' per-stack limit; this one would serialize
        # every stack
        assert "concurrency_limit" not in dep
        assert dep["work_pool"]["name"] == "insarflow-process"
