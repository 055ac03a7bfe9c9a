"""Shared test settings: Hypothesis profiles that keep the MPC suite fast.

Every MPC property test runs a whole multi-party protocol per example, so the
default profile keeps the example count modest and turns off the per-example
deadline (thread start-up and dealer generation vary with machine load).
Select the heavier profile with ``pytest --hypothesis-profile=ci``.

``tests.servers`` provides the real PostgreSQL and S3 servers that the service
tests share.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

pytest_plugins = ["tests.servers"]

settings.register_profile(
    "dev",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("dev")
