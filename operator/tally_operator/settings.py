"""Typed operator configuration, read once from the environment at start-up.

Every variable has the ``TALLY_OPERATOR_`` prefix (except ``TALLY_PARTY_ID``, which the
services share). The Helm chart sets them; ``OperatorConfig.from_env`` turns them into
one frozen object that the handlers receive through kopf's ``memo``. A missing or
malformed value raises :class:`ConfigurationError` naming the variable and what it
expects, so a misconfigured release fails at start-up rather than at the first job.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

PREFIX = "TALLY_OPERATOR_"

# The taints the common managed Kubernetes offerings put on spot/preemptible nodes.
# EKS managed node groups do not taint spot nodes by default, but clusters that
# reserve spot capacity usually add this one.
DEFAULT_SPOT_TOLERATIONS: tuple[dict[str, str], ...] = (
    {
        "key": "cloud.google.com/gke-spot",
        "operator": "Equal",
        "value": "true",
        "effect": "NoSchedule",
    },
    {
        "key": "kubernetes.azure.com/scalesetpriority",
        "operator": "Equal",
        "value": "spot",
        "effect": "NoSchedule",
    },
    {
        "key": "eks.amazonaws.com/capacityType",
        "operator": "Equal",
        "value": "SPOT",
        "effect": "NoSchedule",
    },
    {
        "key": "cloud.google.com/gke-preemptible",
        "operator": "Equal",
        "value": "true",
        "effect": "NoSchedule",
    },
)

# The labels by which the same offerings mark spot nodes (used for preferred affinity,
# and for keeping workers off spot nodes when a job does not allow them).
DEFAULT_SPOT_NODE_LABELS: tuple[tuple[str, str], ...] = (
    ("cloud.google.com/gke-spot", "true"),
    ("kubernetes.azure.com/scalesetpriority", "spot"),
    ("eks.amazonaws.com/capacityType", "SPOT"),
    ("karpenter.sh/capacity-type", "spot"),
    ("cloud.google.com/gke-preemptible", "true"),
)

DEFAULT_WORKER_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "1", "memory": "2Gi"},
    "limits": {"memory": "4Gi"},
}

_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
_REQUIREMENT = r"[A-Za-z0-9._/-]+(=|==|!=)[A-Za-z0-9._-]*"
_LABEL_SELECTOR = re.compile(rf"^{_REQUIREMENT}(,{_REQUIREMENT})*$")


class ConfigurationError(Exception):
    """The operator's environment is missing a variable or holds a malformed one."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class OperatorConfig:
    """Everything the operator needs to know about its party and cluster."""

    namespace: str
    """Namespace of this party's release: the operator watches AnalyticsJobs here and
    looks for the secret-store pods here (``TALLY_OPERATOR_NAMESPACE``)."""

    party_id: str
    """This party's id in the consortium (``TALLY_PARTY_ID``)."""

    execution_url: str
    """Base URL of this party's execution service REST API (``..._EXECUTION_URL``)."""

    worker_image: str
    """Image of the execution workers (``..._WORKER_IMAGE``)."""

    execution_token: str | None = dataclasses.field(default=None, repr=False)
    """Bearer token of the operator at the execution service (``..._EXECUTION_TOKEN``,
    from a Secret)."""

    execution_ca: str | None = None
    """CA file that verifies the execution service's HTTPS certificate
    (``..._EXECUTION_CA``); default: the system trust store."""

    worker_command: tuple[str, ...] = ("python", "-m", "tally.execution.pod")
    """Entry point of a worker container, a JSON list (``..._WORKER_COMMAND``)."""

    worker_service_account: str = "default"
    """Service account of worker pods; it needs no API permissions
    (``..._WORKER_SERVICE_ACCOUNT``)."""

    worker_env_configmap: str | None = None
    """ConfigMap whose keys become worker environment variables: service URLs,
    object-store endpoint (``..._WORKER_ENV_CONFIGMAP``)."""

    worker_env_secret: str | None = None
    """Secret whose keys become worker environment variables: object-store and
    database credentials (``..._WORKER_ENV_SECRET``)."""

    partylink_tls_secret: str | None = None
    """Secret with ``tls.crt``, ``tls.key`` and ``ca.crt`` for PartyLink, mounted into
    workers at ``/etc/tally/tls`` (``..._PARTYLINK_TLS_SECRET``)."""

    rest_tls_secret: str | None = None
    """Secret of the REST listeners' certificate; only its ``ca.crt`` is mounted into
    workers, at ``/etc/tally/rest`` (``..._REST_TLS_SECRET``)."""

    default_consortium: str = "tally"
    """Consortium used when an AnalyticsJob names none (``..._DEFAULT_CONSORTIUM``)."""

    default_zone: str | None = None
    """Zone used when neither the job nor the secret-store's node gives one
    (``..._DEFAULT_ZONE``)."""

    secret_store_selector: str = "app.kubernetes.io/component=secret-store"
    """Label selector of this party's secret-store pods, whose node's zone is the
    default zone of jobs (``..._SECRET_STORE_SELECTOR``)."""

    spot_tolerations: tuple[dict[str, Any], ...] = DEFAULT_SPOT_TOLERATIONS
    """Tolerations added to workers of jobs that allow spot nodes, a JSON list
    (``..._SPOT_TOLERATIONS``)."""

    spot_node_labels: tuple[tuple[str, str], ...] = DEFAULT_SPOT_NODE_LABELS
    """Node labels that mark spot nodes, a JSON object (``..._SPOT_NODE_LABELS``)."""

    worker_resources: Mapping[str, Any] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_WORKER_RESOURCES)
    )
    """Default requests/limits of a worker container, a JSON object; a job's
    ``spec.resources`` overrides it (``..._WORKER_RESOURCES``)."""

    worker_priority_class: str | None = None
    """PriorityClass of worker pods (``..._WORKER_PRIORITY_CLASS``)."""

    worker_backoff_limit: int = 3
    """Retries of worker pods that fail on their own (not through preemption, which
    never counts) before the Job fails (``..._WORKER_BACKOFF_LIMIT``)."""

    worker_ttl_seconds: int = 86_400
    """Seconds a finished worker Job is kept for inspection (``..._WORKER_TTL_SECONDS``)."""

    default_max_restarts: int = 3
    """Restarts after preemption allowed when a job does not say (``..._DEFAULT_MAX_RESTARTS``)."""

    max_partitions: int = 256
    """Upper bound on ``spec.partitions`` (``..._MAX_PARTITIONS``)."""

    poll_interval: float = 5.0
    """Seconds between progress polls of the execution service (``..._POLL_INTERVAL``)."""

    request_timeout: float = 10.0
    """Timeout of one request to the execution service or the Kubernetes API
    (``..._REQUEST_TIMEOUT``)."""

    post_events: bool = True
    """Post Kubernetes Events for job transitions (``..._POST_EVENTS``)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> OperatorConfig:
        """Build the configuration from environment variables, or raise ConfigurationError."""
        reader = _EnvReader(environ)
        config = cls(
            namespace=reader.required("NAMESPACE"),
            party_id=reader.required("PARTY_ID", name="TALLY_PARTY_ID"),
            execution_url=reader.url("EXECUTION_URL"),
            worker_image=reader.required("WORKER_IMAGE"),
            execution_token=reader.optional("EXECUTION_TOKEN"),
            execution_ca=reader.optional("EXECUTION_CA"),
            worker_command=reader.string_list("WORKER_COMMAND", cls.worker_command),
            worker_service_account=reader.optional("WORKER_SERVICE_ACCOUNT") or "default",
            worker_env_configmap=reader.optional("WORKER_ENV_CONFIGMAP"),
            worker_env_secret=reader.optional("WORKER_ENV_SECRET"),
            partylink_tls_secret=reader.optional("PARTYLINK_TLS_SECRET"),
            rest_tls_secret=reader.optional("REST_TLS_SECRET"),
            default_consortium=reader.optional("DEFAULT_CONSORTIUM") or "tally",
            default_zone=reader.optional("DEFAULT_ZONE"),
            secret_store_selector=reader.selector(
                "SECRET_STORE_SELECTOR", cls.secret_store_selector
            ),
            spot_tolerations=reader.tolerations("SPOT_TOLERATIONS"),
            spot_node_labels=reader.node_labels("SPOT_NODE_LABELS"),
            worker_resources=reader.json_object("WORKER_RESOURCES", DEFAULT_WORKER_RESOURCES),
            worker_priority_class=reader.optional("WORKER_PRIORITY_CLASS"),
            worker_backoff_limit=reader.integer("WORKER_BACKOFF_LIMIT", 3, minimum=0),
            worker_ttl_seconds=reader.integer("WORKER_TTL_SECONDS", 86_400, minimum=0),
            default_max_restarts=reader.integer("DEFAULT_MAX_RESTARTS", 3, minimum=0),
            max_partitions=reader.integer("MAX_PARTITIONS", 256, minimum=1),
            poll_interval=reader.seconds("POLL_INTERVAL", 5.0),
            request_timeout=reader.seconds("REQUEST_TIMEOUT", 10.0),
            post_events=reader.boolean("POST_EVENTS", True),
        )
        return config


class _EnvReader:
    """Parses ``TALLY_OPERATOR_*`` variables, naming the variable in every error."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def _raw(self, key: str, name: str | None = None) -> tuple[str, str | None]:
        full = name or PREFIX + key
        value = self._environ.get(full)
        return full, (value.strip() if value is not None and value.strip() else None)

    def optional(self, key: str) -> str | None:
        return self._raw(key)[1]

    def required(self, key: str, *, name: str | None = None) -> str:
        full, value = self._raw(key, name)
        if value is None:
            raise ConfigurationError(f"{full} is required but not set")
        return value

    def url(self, key: str) -> str:
        full, value = self._raw(key)
        if value is None:
            raise ConfigurationError(f"{full} is required but not set")
        if not re.match(r"^https?://[^/\s]+", value):
            raise ConfigurationError(f"{full} must be an http(s) URL, got {value!r}")
        return value.rstrip("/")

    def integer(self, key: str, default: int, *, minimum: int) -> int:
        full, value = self._raw(key)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigurationError(f"{full} must be an integer, got {value!r}") from None
        if number < minimum:
            raise ConfigurationError(f"{full} must be at least {minimum}, got {number}")
        return number

    def seconds(self, key: str, default: float) -> float:
        full, value = self._raw(key)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigurationError(f"{full} must be a number of seconds, got {value!r}") from None
        if not number > 0:
            raise ConfigurationError(f"{full} must be positive, got {value!r}")
        return number

    def boolean(self, key: str, default: bool) -> bool:
        full, value = self._raw(key)
        if value is None:
            return default
        if value.lower() in {"1", "true", "yes", "on"}:
            return True
        if value.lower() in {"0", "false", "no", "off"}:
            return False
        raise ConfigurationError(f"{full} must be true or false, got {value!r}")

    def selector(self, key: str, default: str) -> str:
        full, value = self._raw(key)
        if value is None:
            return default
        if not _LABEL_SELECTOR.match(value):
            raise ConfigurationError(
                f"{full} must be an equality label selector like 'a=b,c=d', got {value!r}"
            )
        return value

    def _json(self, key: str) -> tuple[str, Any]:
        full, value = self._raw(key)
        if value is None:
            return full, None
        try:
            return full, json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"{full} must be JSON: {exc}") from None

    def string_list(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        full, parsed = self._json(key)
        if parsed is None:
            return default
        if not (isinstance(parsed, list) and parsed and all(isinstance(s, str) for s in parsed)):
            raise ConfigurationError(f"{full} must be a non-empty JSON list of strings")
        return tuple(parsed)

    def json_object(self, key: str, default: Mapping[str, Any]) -> dict[str, Any]:
        full, parsed = self._json(key)
        if parsed is None:
            return dict(default)
        if not isinstance(parsed, dict):
            raise ConfigurationError(f"{full} must be a JSON object")
        return parsed

    def tolerations(self, key: str) -> tuple[dict[str, Any], ...]:
        full, parsed = self._json(key)
        if parsed is None:
            return DEFAULT_SPOT_TOLERATIONS
        if not isinstance(parsed, list):
            raise ConfigurationError(f"{full} must be a JSON list of tolerations")
        for item in parsed:
            if not isinstance(item, dict) or "key" not in item or set(item) - _TOLERATION_KEYS:
                raise ConfigurationError(
                    f"{full}: each toleration needs a 'key' and only the fields "
                    f"{sorted(_TOLERATION_KEYS)}, got {item!r}"
                )
        return tuple(parsed)

    def node_labels(self, key: str) -> tuple[tuple[str, str], ...]:
        full, parsed = self._json(key)
        if parsed is None:
            return DEFAULT_SPOT_NODE_LABELS
        if not isinstance(parsed, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()
        ):
            raise ConfigurationError(f"{full} must be a JSON object of label name to value")
        return tuple(parsed.items())
