"""Beneš networks: a permutation of 2^k wires as 2k - 1 layers of 2^(k-1) switches.

A network is a list of layers; layer l reads the wires of layer l - 1 through a public
*pre-wiring* ``P_l`` and then switches pairs: output ``2s + o`` of layer l is wire
``P_l[2s + (o ^ c_s)]`` of layer l - 1, where ``c_s`` is switch s's bit.  The pre-wirings
depend only on the size (:func:`wirings`); the switch bits encode the permutation
(:func:`route`).  Layers 0 .. k-2 are the first columns of the recursion's depths
0 .. k-2 (blocks of 2^(k-d) wires, split into an upper and a lower half network),
layer k-1 the middle column (blocks of 2), layers k .. 2k-2 the last columns of depths
k-2 .. 0.

Routing is the looping algorithm, vectorised over every block of a depth at once:
the two outputs of a last-column switch and the two outputs whose inputs share a
first-column switch must take different half networks; these constraints form even
cycles, two-coloured by comparing each node's orbit minimum under the "two steps along
the cycle" map with its partner's (pointer doubling, log2 of the block size gathers per
depth).  No Python loop runs over wires: O(N log^2 N) numpy work in all.

Used by the ``ot`` generator's shuffle correlations (:mod:`tally.mpc.offline.ot`).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Indices = NDArray[np.int64]


def size_for(rows: int) -> int:
    """The smallest power of two that holds ``rows`` (at least 2)."""
    return max(2, 1 << max(0, rows - 1).bit_length())


def wirings(size: int) -> list[Indices]:
    """The public pre-wiring ``P_l`` of every layer of the network on ``size`` wires."""
    k = size.bit_length() - 1
    if size < 2 or 1 << k != size:
        raise ValueError("a Beneš network has a power-of-two size of at least 2")
    positions = np.arange(size, dtype=np.int64)
    identity = positions.copy()
    layers: list[Indices] = [identity]  # the first layer reads the inputs as they are
    for depth in range(1, k):  # first columns of depths 1 .. k-1 (the last: the middle)
        n = size >> (depth - 1)  # the previous depth's block size
        block, local = positions // n * n, positions % n
        half, k_in = local // (n // 2), local % (n // 2)
        layers.append(block + 2 * k_in + half)  # block layout of the next depth
    for depth in range(k - 2, -1, -1):  # last columns: interleave the two halves' outputs
        n = size >> depth
        block, local = positions // n * n, positions % n
        switch, half = local // 2, local % 2
        layers.append(block + half * (n // 2) + switch)
    return layers


def route(permutation: Indices) -> list[NDArray[np.bool_]]:
    """The switch bits of every layer for ``permutation`` (output t receives input
    ``permutation[t]``) on a power-of-two number of wires."""
    size = len(permutation)
    k = size.bit_length() - 1
    if size < 2 or 1 << k != size:
        raise ValueError("a Beneš network has a power-of-two size of at least 2")
    positions = np.arange(size, dtype=np.int64)
    p = np.asarray(permutation, dtype=np.int64).copy()
    first: list[NDArray[np.bool_]] = []
    last: list[NDArray[np.bool_]] = []
    for depth in range(k - 1):
        n = size >> depth
        inverse = np.empty_like(p)
        inverse[p] = positions
        step = inverse[p[positions ^ 1] ^ 1]  # two steps along the cycle: same colour
        low = _orbit_minimum(step, n // 2)
        colour = low < low[positions ^ 1]  # True: the lower half network
        last.append(colour[0::2])  # switch s: output 2s comes from the lower half
        first.append(colour[inverse[0::2]])  # input 2s goes to the lower half
        block, local = positions // n * n, positions % n
        half = (positions % 2) ^ colour[positions & ~1]
        destination = block + half * (n // 2) + local // 2
        moved = np.empty_like(p)
        moved[destination] = block + half * (n // 2) + (p % n) // 2
        p = moved
    middle = p[0::2] == positions[0::2] + 1  # blocks of two: crossed or not
    return [*first, middle, *last[::-1]]


def _orbit_minimum(step: Indices, longest: int) -> Indices:
    """For every node, the smallest node of its orbit under ``step`` (orbits of at most
    ``longest`` nodes)."""
    low = np.arange(len(step), dtype=np.int64)
    jump = step.copy()
    reach = 1
    while reach < longest:
        low = np.minimum(low, low[jump])
        jump = jump[jump]
        reach *= 2
    return np.minimum(low, low[jump])


def apply(values: NDArray[np.generic], layers: list[NDArray[np.bool_]]) -> NDArray[np.generic]:
    """The network's output for ``values`` (a check: equals ``values[permutation]``)."""
    wires = values
    for wiring, bits in zip(wirings(len(values)), layers, strict=True):
        before = wires[wiring]
        out = before.copy()
        out[0::2] = np.where(bits, before[1::2], before[0::2])
        out[1::2] = np.where(bits, before[0::2], before[1::2])
        wires = out
    return wires
