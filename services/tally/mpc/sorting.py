"""The sort every caller uses: radix sort or quicksort, planned by key width and row count.

:func:`sort_rows` picks :func:`tally.mpc.sort.radix_sort` or
:func:`tally.mpc.quicksort.quicksort` with :func:`choose_sort`, whose rule comes from
the measurements in docs/engine.md ("Sort: planned by key width").  Both are stable,
take the same keys (most significant first, :class:`tally.mpc.sort.SortKey` XOR words or
:class:`tally.mpc.quicksort.ValueKey` arithmetic values) and the same payload, and open
only values independent of the data (see their docstrings).  Which one runs depends
on public information only (the key widths and the number of rows), so every party
makes the same choice and the choice reveals nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from tally.mpc.party import Party
from tally.mpc.quicksort import AnyKey, ValueKey, quicksort
from tally.mpc.ring import Shares
from tally.mpc.sort import SortKey, merge_keys, radix_sort

METHODS = ("radix", "quick")

QUICK_FROM_BITS = ((1 << 16, 8), (1 << 14, 16), (0, 40))
"""(fewest rows, narrowest total key width) from which the quicksort is used, widest first.

From the measured table in docs/engine.md (online + offline seconds with dealer tuples,
3 parties): the radix sort's cost grows with the key width, the quicksort's with
log2(rows) and barely with the width; the crossing moves to narrower keys as rows grow.
"""


def choose_sort(widths: Sequence[int], rows: int) -> str:
    """``radix`` or ``quick`` for keys of these widths (bits) and this many rows."""
    total = sum(widths)
    for fewest_rows, narrowest in QUICK_FROM_BITS:
        if rows >= fewest_rows:
            return "quick" if total >= narrowest else "radix"
    return "radix"


def sort_rows(
    party: Party,
    keys: Sequence[AnyKey],
    payload: Shares,
    payload_kinds: str | None = None,
    method: str | None = None,
) -> Shares:
    """Stably sort the rows of ``payload`` (``(rows, width)``) by ``keys``; the sorted payload.

    ``method``: ``radix`` or ``quick``; by default :func:`choose_sort` decides.
    """
    rows = payload.shape[0]
    method = method or choose_sort([k.width for k in keys], rows)
    if method == "quick":
        return quicksort(party, keys, payload, payload_kinds)
    if method != "radix":
        raise ValueError(f"unknown sort method {method!r}: use one of {METHODS}")
    words = [k.as_sort_key(party) if isinstance(k, ValueKey) else k for k in keys]
    return radix_sort(party, merge_keys(words), payload, payload_kinds)


def radix_keys(party: Party, keys: Sequence[AnyKey]) -> list[SortKey]:
    """The keys as XOR words for a radix sort, adjacent ones packed (bit-decomposes values)."""
    return merge_keys([k.as_sort_key(party) if isinstance(k, ValueKey) else k for k in keys])
