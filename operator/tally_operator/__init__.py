"""Tally's Kubernetes operator: AnalyticsJob and Consortium resources.

The operator watches ``AnalyticsJob`` custom resources (group ``tally.dev``) in its
party's namespace, submits each job to the party's execution service, runs the
execution workers as an Indexed ``batch/v1`` Job pinned to one availability zone
(on spot nodes when allowed), counts workers lost to preemption, and mirrors the
job's progress into ``.status``. ``Consortium`` resources describe the parties and
are rendered into the ConfigMap that workers and services read their peers from.

Layout: ``main`` holds the thin ``@kopf.on.*`` registrations, ``handlers`` the
logic behind them, ``builders`` the pure manifest builders, ``spec`` and
``consortium`` the validated resource models, ``settings`` the typed configuration,
``execution`` the small httpx client of the party's execution service, and ``kube``
the operator's Kubernetes API calls on ``kubernetes_asyncio``, logged in by kopf.
"""

__version__ = "0.1.0"
