"""The logic behind the ``@kopf.on.*`` registrations in :mod:`tally_operator.main`."""
