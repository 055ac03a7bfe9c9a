"""``python -m tally_operator``: read the configuration, build the runtime, run kopf.

Flags: ``--liveness URL`` (default ``http://0.0.0.0:8080/healthz``) for the pod's
liveness probe, ``--verbose`` for debug logs. Everything else comes from the
``TALLY_OPERATOR_*`` environment (see :mod:`tally_operator.settings`).
"""

from __future__ import annotations

import argparse
import os
import sys

import kopf

import tally_operator.main  # noqa: F401  (the import registers the kopf handlers)
from tally_operator.execution import HttpExecutionClient
from tally_operator.kube import KubeApi
from tally_operator.runtime import Runtime
from tally_operator.settings import ConfigurationError, OperatorConfig


def run(argv: list[str] | None = None) -> int:
    """Run the operator until it is stopped; 2 on a configuration error."""
    parser = argparse.ArgumentParser(prog="tally-operator", description=__doc__)
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    try:
        config = OperatorConfig.from_env(os.environ)
    except ConfigurationError as exc:
        print(f"tally-operator: configuration error: {exc}", file=sys.stderr)
        return 2
    runtime = Runtime(
        config=config,
        execution=HttpExecutionClient(
            config.execution_url,
            token=config.execution_token,
            timeout=config.request_timeout,
            ca=config.execution_ca,
        ),
        kube=KubeApi(timeout=config.request_timeout),
    )
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.JSON)
    kopf.run(
        registry=kopf.get_default_registry(),
        namespaces=[config.namespace],
        standalone=True,
        liveness_endpoint=args.liveness,
        memo=kopf.Memo(runtime=runtime),
    )
    return 0


if __name__ == "__main__":
    sys.exit(run())
