"""The tuple-service (DESIGN §2, §4): generates offline material, keeps pools, reserves per job.

* :mod:`~tally.tuples.settings`: ``TuplesSettings`` from ``TALLY_TUPLES_*``.
* :mod:`~tally.tuples.store`: chunk index in SQL, shares in the ``BlobStore``.
* :mod:`~tally.tuples.node`: sessions, generation, reservation and release.
* :mod:`~tally.tuples.link` / :mod:`~tally.tuples.server`: TupleLink over gRPC with
  mutual TLS (:mod:`tally.common.tls`).
* :mod:`~tally.tuples.app`: the REST API for operators and the execution service
  (bearer tokens).
* :mod:`~tally.tuples.dealer`: the independent dealer process (generator ``dealer``).
* ``python -m tally.tuples``: run one party's service; ``python -m tally.tuples.dealer``:
  run the dealer.
"""
