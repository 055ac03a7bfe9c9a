"""The execution service: jobs that run across the parties over PartyLink (gRPC).

Modules: ``app`` (REST API), ``service`` (job manager), ``worker`` (one partition of
one job, its own process), ``stages`` (programs cut into checkpointable stages),
``checkpoint``, ``recovery`` (where a rebuilt mesh resumes), ``partylink`` (the
engine's ``Transport`` over gRPC), ``control`` (service-to-service gRPC), ``tls``,
``ports`` with the ``local`` adapters, ``results`` (client side).
"""
