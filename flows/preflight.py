"""Problems outside the configuration file that are known before any work: credentials
(a readable ~/.netrc, a Secret block that does not exist) and a missing ISCE2.

``insarflow validate`` and the start of ``insarflow run`` report them beside the
configuration's own problems, each with the field, the value and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import Any

from flows.config import ConfigIssue

ALL_STAGES = ("acquire", "topsstack", "sbas", "products")


def environment_issues(
    data: Mapping[str, Any], stages: Collection[str] = ALL_STAGES
) -> list[ConfigIssue]:
    """What the selected ``stages`` of this (raw, possibly invalid) configuration lack."""
    from tasks.credentials import CredentialsError, load_earthdata_credentials
    from tasks.topsstack.stack_sentinel import IsceNotFoundError, find_stack_sentinel

    if data.get("engine", "isce2") != "isce2":
        return []  # the simulator needs no credentials and no ISCE2
    acquisition = data.get("acquisition")
    block = acquisition.get("credentials_secret_block") if isinstance(acquisition, dict) else None
    issues: list[ConfigIssue] = []
    if "acquire" in stages:
        try:
            load_earthdata_credentials(secret_block=block if isinstance(block, str) else None)
        except CredentialsError as exc:
            field = "acquisition.credentials_secret_block" if block else "Earthdata credentials"
            issues.append(ConfigIssue(field=field, value=block, message=str(exc)))
        except Exception as exc:  # the Prefect API holding the block is unreachable
            issues.append(
                ConfigIssue(
                    field="acquisition.credentials_secret_block",
                    value=block,
                    message=f"the Prefect API could not be asked for this Secret block "
                    f"({type(exc).__name__}); start the server PREFECT_API_URL names, or use "
                    "~/.netrc or EARTHDATA_USERNAME/EARTHDATA_PASSWORD instead",
                )
            )
    if "topsstack" in stages:
        try:
            find_stack_sentinel(os.environ)
        except IsceNotFoundError as exc:
            issues.append(ConfigIssue(field="engine", value="isce2", message=str(exc)))
    return issues
