"""Names shared by the CRDs, the manifests the operator builds, and the Helm chart."""

from __future__ import annotations

from typing import Final

GROUP: Final = "tally.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

ANALYTICS_JOB_KIND: Final = "AnalyticsJob"
ANALYTICS_JOB_PLURAL: Final = "analyticsjobs"
CONSORTIUM_KIND: Final = "Consortium"
CONSORTIUM_PLURAL: Final = "consortia"

FINALIZER: Final = "tally.dev/cleanup"
ANNOTATION_PREFIX: Final = "tally.dev"
# On an AnalyticsJob: the execution-service job id it claimed before submitting it
# (see tally_operator.handlers.claims).
CLAIMED_JOB_ID_ANNOTATION: Final = f"{ANNOTATION_PREFIX}/claimed-job-id"

LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_ANALYTICS_JOB: Final = "tally.dev/analyticsjob"
LABEL_CONSORTIUM: Final = "tally.dev/consortium"

APP_NAME: Final = "tally"
WORKER_COMPONENT: Final = "worker"
MANAGED_BY: Final = "tally-operator"

ZONE_LABEL: Final = "topology.kubernetes.io/zone"
WORKER_CONTAINER: Final = "worker"
COMPLETION_INDEX_ANNOTATION: Final = "batch.kubernetes.io/job-completion-index"
CONSORTIUM_FILE: Final = "consortium.json"

# Exit code with which a worker reports an error that no retry can fix (bad program,
# missing dataset): the Job's podFailurePolicy fails the whole Job on it at once.
WORKER_PERMANENT_FAILURE_EXIT_CODE: Final = 3

WORKER_LABELS: Final = {
    LABEL_NAME: APP_NAME,
    LABEL_COMPONENT: WORKER_COMPONENT,
    LABEL_MANAGED_BY: MANAGED_BY,
}
