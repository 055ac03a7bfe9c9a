"""The engine demo: two providers' secret-shared data, three parties, checked against numpy/pandas.

Two data providers each hold a small table of ad views per region.  Each
provider splits its column into additive shares over Z_2^64 (OS randomness)
and hands one share to each of three parties, so no party ever sees a
provider's values.  The parties then compute, on shares only, the joint views
per region and in total, whether A's views exceed B's, and whether they are
equal, and open just those results.  Then the headline primitive: both
providers' event logs (region, views) are shared, concatenated at each party,
and aggregated with ``group_by("region", domain=...).agg(...)``.  The demo
prints everything next to the same computation in plain numpy/pandas and ends
with ``matches plaintext: yes`` or ``no``.

Run with ``python -m tally.demo`` or ``tally demo``.  All parties run as threads
of this process (:func:`tally.mpc.simulate.run_parties`); tuples come from a
local dealer drawing from the OS CSPRNG.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from tally.mpc.columns import SecretColumn
from tally.mpc.party import Party
from tally.mpc.ring import Shares, encode_int, split
from tally.mpc.simulate import run_parties
from tally.mpc.table import ColumnSpec, share_table, table_from_share_set

PARTIES = 3

REGIONS = ["north", "south", "east", "west", "central", "islands"]
PROVIDER_A_VIEWS = np.array([1_200, 860, 430, 2_210, 975, 58], dtype=np.int64)
PROVIDER_B_VIEWS = np.array([1_100, 860, 515, 1_980, 1_020, 58], dtype=np.int64)

Column = NDArray[np.int64]


@dataclass(frozen=True)
class Results:
    """The opened results of one computation: joint views, their total, A > B, A == B."""

    joint_views: Column
    total_views: int
    a_greater: Column
    equal: Column


@dataclass(frozen=True)
class PartyOutput:
    """What one party ends with: the opened results and what it cost that party."""

    results: Results
    bytes_sent: int
    rounds: int


def share_column(values: Column, parties: int) -> list[Shares]:
    """A provider's step: encode a column and split it into one share per party."""
    return split(encode_int(values), parties)


def compute_in_mpc(a_shares: list[Shares], b_shares: list[Shares]) -> list[PartyOutput]:
    """Run the program at every party on its shares; return each party's output."""

    def program(party: Party) -> PartyOutput:
        views_a = SecretColumn(party, a_shares[party.id])
        views_b = SecretColumn(party, b_shares[party.id])
        joint = views_a + views_b
        results = Results(
            joint_views=joint.reveal(),
            total_views=int(joint.sum().reveal()[0]),
            a_greater=(views_a > views_b).reveal(),
            equal=(views_a == views_b).reveal(),
        )
        return PartyOutput(results, party.transport.bytes_sent, party.transport.rounds)

    return run_parties(len(a_shares), program, seed=None)


def compute_in_plaintext(views_a: Column, views_b: Column) -> Results:
    """The same computation in plain numpy, on the providers' values."""
    joint = views_a + views_b
    return Results(
        joint_views=joint,
        total_views=int(joint.sum()),
        a_greater=(views_a > views_b).astype(np.int64),
        equal=(views_a == views_b).astype(np.int64),
    )


def same_results(left: Results, right: Results) -> bool:
    """Whether two sets of results agree exactly."""
    return (
        np.array_equal(left.joint_views, right.joint_views)
        and left.total_views == right.total_views
        and np.array_equal(left.a_greater, right.a_greater)
        and np.array_equal(left.equal, right.equal)
    )


def _yes_no(flag: int) -> str:
    return "yes" if flag else "no"


def format_table(mpc: Results, plain: Results) -> list[str]:
    """The per-region results, MPC next to numpy, as text lines."""
    header = (
        f"{'region':<8} {'A views':>8} {'B views':>8} | "
        f"{'A+B mpc':>8} {'numpy':>8} | {'A>B mpc':>7} {'numpy':>5} | {'A==B mpc':>8} {'numpy':>5}"
    )
    lines = [header, "-" * len(header)]
    for row, region in enumerate(REGIONS):
        lines.append(
            f"{region:<8} {PROVIDER_A_VIEWS[row]:>8} {PROVIDER_B_VIEWS[row]:>8} | "
            f"{mpc.joint_views[row]:>8} {plain.joint_views[row]:>8} | "
            f"{_yes_no(mpc.a_greater[row]):>7} {_yes_no(plain.a_greater[row]):>5} | "
            f"{_yes_no(mpc.equal[row]):>8} {_yes_no(plain.equal[row]):>5}"
        )
    lines.append("-" * len(header))
    lines.append(
        f"{'total':<8} {int(PROVIDER_A_VIEWS.sum()):>8} {int(PROVIDER_B_VIEWS.sum()):>8} | "
        f"{mpc.total_views:>8} {plain.total_views:>8} |"
    )
    return lines


EVENTS_PER_PROVIDER = 2_000


def provider_events(seed: int) -> dict[str, Column]:
    """A provider's made-up event log: a region code and the views of each event."""
    rng = np.random.default_rng(seed)
    return {
        "region": rng.integers(0, len(REGIONS) - 1, EVENTS_PER_PROVIDER),  # no "islands" events
        "views": rng.integers(1, 500, EVENTS_PER_PROVIDER),
    }


def group_by_in_mpc(events: list[dict[str, Column]]) -> dict[str, NDArray[np.float64]]:
    """Share each provider's log, run the group-by at every party, open the result."""
    specs = {"region": ColumnSpec("key", bits=3), "views": ColumnSpec("int", bits=20)}
    share_sets = [share_table(log, specs, PARTIES) for log in events]

    def program(party: Party) -> dict[str, NDArray[np.float64]]:
        joint = {
            name: np.concatenate([share_set[party.id][name] for share_set in share_sets])
            for name in ("region", "views", "valid")
        }
        table = table_from_share_set(party, joint, specs)
        grouped = table.group_by("region", domain=list(range(len(REGIONS)))).agg(
            total=("views", "sum"),
            events=("views", "count"),
            mean=("views", "mean"),
            top=("views", "max"),
        )
        return {k: np.asarray(v, dtype=np.float64) for k, v in grouped.reveal().items()}

    return run_parties(PARTIES, program, seed=None)[0]


def group_by_in_pandas(events: list[dict[str, Column]]) -> dict[str, NDArray[np.float64]]:
    """The same group-by in pandas, over the providers' plain logs."""
    frame = pd.concat([pd.DataFrame(log) for log in events])
    grouped = frame.groupby("region").agg(
        total=("views", "sum"),
        events=("views", "count"),
        mean=("views", "mean"),
        top=("views", "max"),
    )
    grouped = grouped.reindex(range(len(REGIONS)))
    grouped["total"] = grouped["total"].fillna(0)
    grouped["events"] = grouped["events"].fillna(0)
    grouped = grouped.reset_index()
    return {c: grouped[c].to_numpy(dtype=np.float64) for c in grouped.columns}


def same_group_by(
    mpc: dict[str, NDArray[np.float64]], plain: dict[str, NDArray[np.float64]]
) -> bool:
    """Whether the MPC group-by equals pandas (means to fixed-point-free float precision)."""
    return list(mpc) == list(plain) and all(
        np.allclose(mpc[c], plain[c], equal_nan=True, rtol=1e-9) for c in plain
    )


def print_group_by(
    mpc: dict[str, NDArray[np.float64]], plain: dict[str, NDArray[np.float64]]
) -> None:
    """The group-by result, MPC next to pandas."""
    print("group_by('region', domain=all regions).agg(total=sum, events=count, mean, top=max)")
    print(f"over {2 * EVENTS_PER_PROVIDER:,} events from both providers (MPC | pandas):")
    print(f"{'region':<8} {'total':>15} {'events':>13} {'mean':>17} {'top':>11}")
    for row, region in enumerate(REGIONS):
        cells = [f"{mpc[c][row]:>6.0f} | {plain[c][row]:<6.0f}" for c in ("total", "events")] + [
            f"{mpc['mean'][row]:>7.2f} | {plain['mean'][row]:<7.2f}"
        ]
        cells.append(f"{mpc['top'][row]:>4.0f} | {plain['top'][row]:<4.0f}")
        print(f"{region:<8} " + " ".join(cells))


def main() -> int:
    """Run the demo and print its report; 0 when MPC matches plaintext, 1 otherwise."""
    a_shares = share_column(PROVIDER_A_VIEWS, PARTIES)
    b_shares = share_column(PROVIDER_B_VIEWS, PARTIES)
    outputs = compute_in_mpc(a_shares, b_shares)
    plain = compute_in_plaintext(PROVIDER_A_VIEWS, PROVIDER_B_VIEWS)
    mpc = outputs[0].results
    parties_agree = all(same_results(output.results, mpc) for output in outputs)
    events = [provider_events(2026), provider_events(2027)]
    grouped_mpc, grouped_plain = group_by_in_mpc(events), group_by_in_pandas(events)
    matches = (
        parties_agree and same_results(mpc, plain) and same_group_by(grouped_mpc, grouped_plain)
    )

    print(f"Tally engine demo: {PARTIES} parties compute on two providers' secret-shared columns.")
    print(
        "Provider A and provider B each split their ad views per region into "
        f"{PARTIES} additive shares"
    )
    print("over Z_2^64; each party holds one share of each column and never the values.")
    print("The inputs are printed below only so that the results can be checked.")
    print()
    for line in format_table(mpc, plain):
        print(line)
    print()
    for party, output in enumerate(outputs):
        print(f"party {party}: sent {output.bytes_sent:,} bytes in {output.rounds} rounds")
    print()
    print_group_by(grouped_mpc, grouped_plain)
    print()
    if not parties_agree:
        print("the parties opened different results")
    print(f"matches plaintext: {'yes' if matches else 'no'}")
    return 0 if matches else 1


if __name__ == "__main__":
    sys.exit(main())
