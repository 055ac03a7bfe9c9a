"""OperatorConfig.from_env: typed values, defaults, and errors that name the variable."""

from __future__ import annotations

import json

import pytest

from tally_operator.settings import (
    DEFAULT_SPOT_TOLERATIONS,
    ConfigurationError,
    OperatorConfig,
)

REQUIRED = {
    "TALLY_OPERATOR_NAMESPACE": "tally",
    "TALLY_PARTY_ID": "p0",
    "TALLY_OPERATOR_EXECUTION_URL": "http://execution:8000/",
    "TALLY_OPERATOR_WORKER_IMAGE": "tally:1",
}


def test_required_values_and_defaults() -> None:
    config = OperatorConfig.from_env(REQUIRED)
    assert config.execution_url == "http://execution:8000"
    assert config.spot_tolerations == DEFAULT_SPOT_TOLERATIONS
    assert config.poll_interval == 5.0 and config.post_events is True
    assert config.default_zone is None


def test_every_variable_is_parsed() -> None:
    tolerations = [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}]
    config = OperatorConfig.from_env(
        {
            **REQUIRED,
            "TALLY_OPERATOR_WORKER_COMMAND": '["tally-worker"]',
            "TALLY_OPERATOR_SPOT_TOLERATIONS": json.dumps(tolerations),
            "TALLY_OPERATOR_SPOT_NODE_LABELS": '{"node.kubernetes.io/lifecycle": "spot"}',
            "TALLY_OPERATOR_DEFAULT_ZONE": "eu-1b",
            "TALLY_OPERATOR_POLL_INTERVAL": "0.5",
            "TALLY_OPERATOR_MAX_PARTITIONS": "64",
            "TALLY_OPERATOR_POST_EVENTS": "false",
            "TALLY_OPERATOR_EXECUTION_TOKEN": "s3cret",
            "TALLY_OPERATOR_SECRET_STORE_SELECTOR": "app=store,tier!=cache",
        }
    )
    assert config.worker_command == ("tally-worker",)
    assert config.spot_tolerations == tuple(tolerations)
    assert config.spot_node_labels == (("node.kubernetes.io/lifecycle", "spot"),)
    assert config.default_zone == "eu-1b" and config.poll_interval == 0.5
    assert config.max_partitions == 64 and config.post_events is False
    assert "s3cret" not in repr(config)  # the token never reaches a log line


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        ({"TALLY_OPERATOR_NAMESPACE": ""}, "TALLY_OPERATOR_NAMESPACE"),
        ({"TALLY_OPERATOR_EXECUTION_URL": "execution:8000"}, "TALLY_OPERATOR_EXECUTION_URL"),
        ({"TALLY_OPERATOR_POLL_INTERVAL": "soon"}, "TALLY_OPERATOR_POLL_INTERVAL"),
        ({"TALLY_OPERATOR_POLL_INTERVAL": "0"}, "TALLY_OPERATOR_POLL_INTERVAL"),
        ({"TALLY_OPERATOR_MAX_PARTITIONS": "0"}, "TALLY_OPERATOR_MAX_PARTITIONS"),
        ({"TALLY_OPERATOR_WORKER_COMMAND": "python"}, "TALLY_OPERATOR_WORKER_COMMAND"),
        ({"TALLY_OPERATOR_SPOT_TOLERATIONS": '[{"effect": "x"}]'}, "SPOT_TOLERATIONS"),
        ({"TALLY_OPERATOR_SPOT_NODE_LABELS": '["a"]'}, "SPOT_NODE_LABELS"),
        ({"TALLY_OPERATOR_POST_EVENTS": "maybe"}, "TALLY_OPERATOR_POST_EVENTS"),
        ({"TALLY_OPERATOR_SECRET_STORE_SELECTOR": "a in (b)"}, "SECRET_STORE_SELECTOR"),
    ],
)
def test_bad_values_raise_a_configuration_error_naming_the_variable(
    changes: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        OperatorConfig.from_env({**REQUIRED, **changes})


def test_missing_party_id_is_reported() -> None:
    environ = {k: v for k, v in REQUIRED.items() if k != "TALLY_PARTY_ID"}
    with pytest.raises(ConfigurationError, match="TALLY_PARTY_ID is required"):
        OperatorConfig.from_env(environ)
