"""Real ISCE2 for the tests marked ``isce2``: the ``env.sh`` that ``make isce2`` writes.

``INSARFLOW_ISCE2_ENV`` names it (``.ci/run`` builds ISCE2 and sets it). Without it these
tests skip with the reason, unless ``INSARFLOW_REQUIRE_ISCE2=1`` (CI) turns that into a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def isce2_env_script() -> Path:
    value = os.environ.get("INSARFLOW_ISCE2_ENV", "")
    path = Path(value) if value else None
    if path is None or not path.is_file():
        message = (
            "no ISCE2 build: run `make isce2 ISCE2_PREFIX=<dir>` and set "
            f"INSARFLOW_ISCE2_ENV=<dir>/env.sh (now {value or 'unset'})"
        )
        if os.environ.get("INSARFLOW_REQUIRE_ISCE2") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path
