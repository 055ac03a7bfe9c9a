"""Tally: joint analytics over secret-shared tables.

The engine lives in :mod:`tally.mpc`; :func:`program` marks a plain Python
function over :class:`~tally.mpc.table.SecretTable` objects as an analytics
program that every party runs identically.
"""

from tally.mpc.program import program

__all__ = ["program"]
__version__ = "0.1.0"
