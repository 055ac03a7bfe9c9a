"""Run the real kopf operator against :class:`ApiServer` in one event loop.

- :class:`FakeExecution` stands in for the execution service and records every call;
- :class:`JobControllerSim` plays the part of Kubernetes' Job controller for Indexed
  Jobs: one running pod per unfinished index, a replacement when a pod is deleted or
  fails with ``DisruptionTarget`` (what ``podFailurePolicy: Ignore`` makes the real
  controller do). It is deliberately tiny; the operator, not the simulator, is under
  test;
- :func:`running_operator` starts the API server, writes a kubeconfig that points at it
  (the operator's own login handler reads it, as it would on a laptop; the API server
  refuses any request without its token, kopf's and the operator's own alike), runs
  ``kopf.operator`` with the operator's real registrations, and stops everything with
  bounded waits.

Every wait is bounded: :func:`eventually` polls with a deadline, the whole scenario
runs under ``asyncio.timeout``, and the operator must stop within ``STOP_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import kmock
import kopf
import yaml

import tally_operator.main  # noqa: F401  (registers the handlers in kopf's default registry)
from tally_operator.execution import (
    ExecutionJobNotFound,
    ExecutionJobState,
    ExecutionRejected,
    Submission,
)
from tally_operator.kube import KubeApi
from tally_operator.runtime import Runtime
from tally_operator.settings import OperatorConfig
from tests.operator.apiserver import ApiServer

NAMESPACE = "tally"
AJ = "tally.dev/v1alpha1/analyticsjobs"
CONSORTIA = "tally.dev/v1alpha1/consortia"
JOBS = "batch/v1/jobs"
PODS = "v1/pods"
NODES = "v1/nodes"
EVENTS = "v1/events"
CONFIGMAPS = "v1/configmaps"
SECRETS = "v1/secrets"
STOP_TIMEOUT = 20.0
KUBECONFIG_TOKEN = "operator-test-token"
INDEX_KEY = "batch.kubernetes.io/job-completion-index"

T = TypeVar("T")

RESOURCES: dict[str, kmock.ResourceInfo] = {
    "v1/namespaces": kmock.ResourceInfo(kind="Namespace", namespaced=False),
    EVENTS: kmock.ResourceInfo(kind="Event", namespaced=True),
    PODS: kmock.ResourceInfo(kind="Pod", namespaced=True, subresources={"status"}),
    NODES: kmock.ResourceInfo(kind="Node", namespaced=False),
    CONFIGMAPS: kmock.ResourceInfo(kind="ConfigMap", namespaced=True),
    SECRETS: kmock.ResourceInfo(kind="Secret", namespaced=True),
    JOBS: kmock.ResourceInfo(kind="Job", namespaced=True, subresources={"status"}),
    AJ: kmock.ResourceInfo(
        kind="AnalyticsJob",
        singular="analyticsjob",
        namespaced=True,
        shortnames={"aj"},
        subresources={"status"},
    ),
    CONSORTIA: kmock.ResourceInfo(
        kind="Consortium", singular="consortium", namespaced=True, subresources={"status"}
    ),
}
VERBS = {"list", "watch", "get", "create", "patch", "update", "delete"}


class FakeExecution:
    """The execution service, in memory: submitted jobs, their states, cancellations."""

    def __init__(self) -> None:
        self.submitted: list[dict[str, Any]] = []
        self.tokens: list[str] = []
        """The bearer token of every submission (the analyst's, from its Secret)."""
        self.cancelled: list[str] = []
        self.worker_tokens: list[str] = []
        """The job of every worker token issued."""
        self._owners: dict[str, tuple[str, dict[str, Any]]] = {}
        self.states: dict[str, ExecutionJobState] = {}

    async def submit(self, job: Mapping[str, Any], token: str) -> Submission:
        self.submitted.append(dict(job))
        self.tokens.append(token)
        job_id = str(job["id"])
        first = self._owners.setdefault(job_id, (token, dict(job)))
        if first != (token, dict(job)):  # like the service: another job by that id is 409
            raise ExecutionRejected(409, "job_conflict", f"job {job_id!r} exists here")
        if job_id in self.states:  # the same job again: 200, the job as it is
            return Submission(state=self.states[job_id], created=False)
        state = ExecutionJobState(id=job_id, phase="Pending")
        # The service reserves tuples and starts at once here.
        self.states[job_id] = dataclasses.replace(state, phase="Running", stages=4)
        return Submission(state=state, created=True)

    async def get(self, job_id: str, token: str | None = None) -> ExecutionJobState:
        if job_id not in self.states:
            raise ExecutionJobNotFound(job_id)
        return self.states[job_id]

    async def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)
        if job_id in self.states:
            self.states[job_id] = dataclasses.replace(self.states[job_id], phase="Cancelled")

    async def worker_token(self, job_id: str) -> str:
        if job_id not in self.states:
            raise ExecutionJobNotFound(job_id)
        self.worker_tokens.append(job_id)
        return f"twrk_fake-{job_id}"

    async def close(self) -> None:
        return None

    def report(self, job_id: str, **changes: Any) -> None:
        """Change what the service reports about a job (phase, stage, results…)."""
        self.states[job_id] = dataclasses.replace(self.states[job_id], **changes)


class JobControllerSim:
    """Keeps one live pod per unfinished index of every Indexed Job (see module docstring)."""

    def __init__(self, api: ApiServer, *, node: str = "node-a") -> None:
        self.api = api
        self.node = node
        self.created: list[dict[str, Any]] = []

    async def run(self) -> None:
        while True:
            for job in self.api.list(JOBS):
                await self._reconcile(job)
            await asyncio.sleep(0.05)

    async def _reconcile(self, job: dict[str, Any]) -> None:
        if job["metadata"].get("deletionTimestamp"):
            return
        uid, name = job["metadata"]["uid"], job["metadata"]["name"]
        namespace = job["metadata"]["namespace"]
        pods = [p for p in self.api.list(PODS, namespace) if _owned_by(p, uid)]
        for index in range(job["spec"]["completions"]):
            mine = [p for p in pods if p["metadata"]["annotations"][INDEX_KEY] == str(index)]
            if any(p["status"].get("phase") == "Succeeded" for p in mine):
                continue
            live = [p for p in mine if p["status"].get("phase") in ("Pending", "Running")]
            if not live:
                await self._create_pod(job, namespace, name, uid, index)

    async def _create_pod(
        self, job: dict[str, Any], namespace: str, name: str, uid: str, index: int
    ) -> None:
        template = job["spec"]["template"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{name}-{index}-{uuid.uuid4().hex[:5]}",
                "namespace": namespace,
                "labels": {
                    **template["metadata"]["labels"],
                    "job-name": name,
                    INDEX_KEY: str(index),
                },
                "annotations": {INDEX_KEY: str(index)},
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": name,
                        "uid": uid,
                        "controller": True,
                    }
                ],
            },
            "spec": {**template["spec"], "nodeName": self.node},
            "status": {"phase": "Running"},
        }
        self.created.append(await self.api.create(PODS, pod))

    def pods(self, index: int | None = None) -> list[dict[str, Any]]:
        """The live worker pods (of one index)."""
        return [
            p
            for p in self.api.list(PODS, NAMESPACE)
            if INDEX_KEY in p["metadata"].get("annotations", {})
            and (index is None or p["metadata"]["annotations"][INDEX_KEY] == str(index))
        ]


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    return any(o.get("uid") == uid for o in obj["metadata"].get("ownerReferences") or [])


@dataclasses.dataclass
class Cluster:
    """What a scenario gets: the API server, the fakes, and helpers."""

    api: ApiServer
    execution: FakeExecution
    jobs: JobControllerSim
    config: OperatorConfig

    def analytics_job(self, name: str) -> dict[str, Any] | None:
        return self.api.get(AJ, NAMESPACE, name)

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.api.list(EVENTS) if reason is None or e.get("reason") == reason]


async def eventually(
    check: Callable[[], T | None] | Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 30.0,
    what: str = "condition",
) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def make_config(**overrides: Any) -> OperatorConfig:
    """The operator configuration the scenarios run with (fast polling)."""
    values: dict[str, Any] = {
        "namespace": NAMESPACE,
        "party_id": "party-0",
        "execution_url": "http://execution.tally.svc:8000",
        "worker_image": "registry.example/tally:0.1.0",
        "worker_service_account": "tally-worker",
        "worker_env_configmap": "tally-worker-env",
        "partylink_tls_secret": "tally-partylink-tls",
        "poll_interval": 0.2,
        "request_timeout": 5.0,
    }
    values.update(overrides)
    return OperatorConfig(**values)


def _write_kubeconfig(path: Path, server: str) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "kmock",
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "op"}}],
                "clusters": [{"name": "kmock", "cluster": {"server": server}}],
                "users": [{"name": "op", "user": {"token": KUBECONFIG_TOKEN}}],
            }
        )
    )


ANALYST_TOKEN = "analyst-token-0123456789abcdef"


def analyst_secret(name: str = "analyst-credentials", token: str = ANALYST_TOKEN) -> dict[str, Any]:
    """The Secret an analyst creates beside its AnalyticsJobs: its own bearer token."""
    return {
        "metadata": {"name": name, "namespace": NAMESPACE},
        "data": {"token": base64.b64encode(token.encode()).decode()},
    }


@contextlib.asynccontextmanager
async def running_operator(
    tmp_path: Path, *, with_consortium: bool = True, **config: Any
) -> AsyncIterator[Cluster]:
    """Start the API server, the Job controller simulator and the operator; stop them after."""
    async with ApiServer() as api, kmock.Server(api) as server:
        for resource, info in RESOURCES.items():
            info.verbs.update(VERBS)
            api.resources[resource] = info
        api.authorization = f"Bearer {KUBECONFIG_TOKEN}"  # kopf and KubeApi both log in
        kubeconfig = tmp_path / "kubeconfig"
        _write_kubeconfig(kubeconfig, str(server.url).rstrip("/"))
        previous = os.environ.get("KUBECONFIG")
        os.environ["KUBECONFIG"] = str(kubeconfig)

        execution = FakeExecution()
        cluster = Cluster(api, execution, JobControllerSim(api), make_config(**config))
        runtime = Runtime(config=cluster.config, execution=execution, kube=KubeApi(timeout=5.0))
        stop, ready = asyncio.Event(), asyncio.Event()
        settings = kopf.OperatorSettings()
        settings.watching.reconnect_backoff = 0.1
        controller = asyncio.create_task(cluster.jobs.run())
        operator = asyncio.create_task(
            kopf.operator(
                registry=kopf.get_default_registry(),
                settings=settings,
                namespaces=[NAMESPACE],
                standalone=True,
                stop_flag=stop,
                ready_flag=ready,
                memo=kopf.Memo(runtime=runtime),
            )
        )
        try:
            await asyncio.wait_for(ready.wait(), timeout=30)
            await api.create(SECRETS, analyst_secret())
            if with_consortium:  # as if the default Consortium had been rendered already
                await api.create(
                    CONFIGMAPS,
                    {"metadata": {"name": "tally-parties", "namespace": NAMESPACE}, "data": {}},
                )
            yield cluster
        finally:
            stop.set()
            api.stop_watches()
            try:
                await asyncio.wait_for(operator, timeout=STOP_TIMEOUT)
            finally:
                controller.cancel()
                await asyncio.gather(controller, return_exceptions=True)
                if previous is None:
                    os.environ.pop("KUBECONFIG", None)
                else:
                    os.environ["KUBECONFIG"] = previous


def run_scenario(scenario: Callable[[], Awaitable[None]], *, timeout: float = 90.0) -> None:
    """Run an async scenario in a fresh event loop under an overall timeout."""

    async def bounded() -> None:
        async with asyncio.timeout(timeout):
            await scenario()

    asyncio.run(bounded())
