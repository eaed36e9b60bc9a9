from __future__ import annotations

import shutil

import pytest

PACEMAKER_TOOLS = ("crm_mon", "crm_simulate", "cibadmin", "crm_resource", "crm_verify")


@pytest.fixture(scope="session")
def pacemaker_tools() -> None:
    """The integration tests need Pacemaker's CLI; `make test` installs it, so absence is a failure."""
    missing = [t for t in PACEMAKER_TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail(f"Pacemaker tools missing: {missing} (run `make test`, which installs them)")
