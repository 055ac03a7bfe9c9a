"""Code shared by the Tally services: blob storage, SQL helpers, auth, errors, settings.

Nothing here imports a service package (``tally.secret_store``, ``tally.tuples``,
``tally.execution``); the services build on it.
"""
