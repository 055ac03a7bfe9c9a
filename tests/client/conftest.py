"""Fixtures of the client suite: one real embedded deployment per test module.

``deployment`` starts three parties (secret-store, tuple-service, execution as
separate processes, mutual TLS, hm3 tuples) in a temporary state folder, with the
identities ``you``, ``provider-a``, ``provider-b`` and ``analyst``.  ``XDG_*`` point
into a temporary home so that no test touches the user's current deployment.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tally.client.cluster import Cluster
from tally.local_deployment import LocalDeployment

IDENTITIES = ["provider-a", "provider-b", "analyst"]


@pytest.fixture(scope="session", autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private XDG config and data home for the whole client suite."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CONFIG_HOME", str(home / "config"))
        patch.setenv("XDG_DATA_HOME", str(home / "data"))
        patch.delenv("TALLY_CONFIG", raising=False)
        patch.delenv("TALLY_IDENTITY", raising=False)
        yield home


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    """A running 3-party embedded deployment, stopped and deleted after the module."""
    local = LocalDeployment(
        tmp_path_factory.mktemp("state"), identities=IDENTITIES, log=lambda _text: None
    )
    try:
        local.up(make_current=False)
        yield local
    finally:
        local.purge()


@pytest.fixture(scope="module")
def cluster(deployment: LocalDeployment) -> Iterator[Cluster]:
    """The deployment as the identity ``you``, without progress bars."""
    with deployment.connect(show_progress=False) as client:
        yield client
