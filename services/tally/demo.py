"""The demo behind ``make demo``: a 3-party deployment, two providers, one analyst, one group-by.

1. Start an embedded deployment: three parties on this machine, each with its
   secret-store, tuple-service and execution service as separate processes, mutual
   TLS between the parties, hm3 tuples (``tally.local``).
2. Two data providers each make up a skewed table of ad views (region, views) and
   upload it: the SDK checks it, splits every value into three additive shares with
   the OS CSPRNG and sends one share to each party.  Each grants the analyst ``use``.
3. The analyst runs ``group_by("region", domain=REGIONS).agg(views=sum, n=count,
   avg=mean)`` over both tables: the parties sort and aggregate on shares, the output
   is padded to every region, and only the analyst reconstructs it.
4. The result is printed next to pandas on the plain tables; the last line says
   whether they match.  Then the deployment stops and its state is deleted.

Run with ``make demo``, ``python -m tally.demo`` or ``tally demo``.  The made-up
tables are printed only as sizes; nothing else leaves the providers in the clear.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

import tally

ROWS_PER_PROVIDER = 200_000
REGIONS = [
    "Aberdeen", "Amsterdam", "Athens", "Barcelona", "Belfast", "Berlin", "Bern", "Bilbao",
    "Bologna", "Bordeaux", "Bratislava", "Brno", "Brussels", "Bucharest", "Budapest", "Cork",
    "Copenhagen", "Dublin", "Edinburgh", "Florence", "Gdansk", "Geneva", "Ghent", "Graz",
    "Hamburg", "Helsinki", "Krakow", "Lisbon", "Ljubljana", "Lyon", "Madrid", "Malmo",
    "Marseille", "Milan", "Munich", "Naples", "Nice", "Oslo", "Paris", "Porto", "Prague",
    "Riga", "Rome", "Rotterdam", "Seville", "Sofia", "Stockholm", "Tallinn", "Vienna",
    "Vilnius", "Warsaw", "Zagreb",
]  # fmt: skip
QUIET_REGIONS = {"Tallinn", "Zagreb"}
"""Regions without a single view: the padded output still lists them (n = 0)."""
AGGREGATIONS = {"views": ("views", "sum"), "n": ("views", "count"), "avg": ("views", "mean")}


def provider_table(seed: int, rows: int = ROWS_PER_PROVIDER) -> pd.DataFrame:
    """A provider's made-up ad views: Zipf-skewed regions, heavy-tailed views per event."""
    rng = np.random.default_rng(seed)
    active = [r for r in REGIONS if r not in QUIET_REGIONS]
    weights = 1.0 / np.arange(1, len(active) + 1) ** 1.1
    order = rng.permutation(len(active))
    regions = np.asarray(active)[order][rng.choice(len(active), rows, p=weights / weights.sum())]
    views = np.minimum(rng.geometric(0.02, rows), 5_000)
    return pd.DataFrame({"region": regions, "views": views})


def plaintext(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """The same group-by in pandas on the plain tables, padded to every region."""
    grouped = pd.concat(tables).groupby("region").agg(**AGGREGATIONS)
    grouped = grouped.reindex(REGIONS).fillna({"views": 0, "n": 0})
    return grouped.rename_axis("region").reset_index()


def matches(mpc: pd.DataFrame, plain: pd.DataFrame) -> bool:
    """Exact sums and counts, means to 1e-9, the same regions in the same order."""
    mpc = mpc.set_index("region").reindex(plain["region"]).reset_index()
    if list(mpc["region"]) != list(plain["region"]) or mpc.isna()["views"].any():
        return False
    return bool(
        np.array_equal(mpc["views"].to_numpy(np.int64), plain["views"].to_numpy(np.int64))
        and np.array_equal(mpc["n"].to_numpy(np.int64), plain["n"].to_numpy(np.int64))
        and np.allclose(mpc["avg"], plain["avg"], rtol=1e-9, equal_nan=True)
    )


def print_side_by_side(mpc: pd.DataFrame, plain: pd.DataFrame) -> None:
    """Every region: the MPC result | pandas."""
    both = mpc.merge(plain, on="region", how="outer", suffixes=("", "_pandas"))
    print(f"{'region':<11} {'views (mpc | pandas)':>23} {'n (mpc | pandas)':>19} "
          f"{'avg (mpc | pandas)':>21}")  # fmt: skip
    for row in both.itertuples(index=False):
        print(
            f"{row.region:<11} {row.views:>11,.0f} | {row.views_pandas:<9,.0f}"
            f"{row.n:>9,.0f} | {row.n_pandas:<7,.0f}"
            f"{row.avg:>10.3f} | {row.avg_pandas:<8.3f}"
        )


def main() -> int:
    """Run the demo; 0 when the MPC result matches pandas."""
    started = time.monotonic()
    tables = [provider_table(2026), provider_table(2027)]
    print("Tally demo: 3 parties, 2 data providers, 1 analyst, on this machine.")
    with tally.local(parties=3, identities=["provider-a", "provider-b", "analyst"]) as local:
        print(f"started 3 parties x (secret-store, tuple-service, execution) with mutual TLS "
              f"and hm3 tuples in {time.monotonic() - started:.1f} s")  # fmt: skip
        for provider, table in zip(("provider-a", "provider-b"), tables, strict=True):
            with local.as_identity(provider) as cluster:
                dataset = cluster.upload(
                    table,
                    name=f"ad-views-{provider[-1]}",
                    keys=["region"],
                    domains={"region": REGIONS},
                    share_with=["analyst"],
                )
            print(f"{provider} secret-shared {dataset.rows:,} rows to 3 parties "
                  f"(dataset {dataset.name})")  # fmt: skip
        with local.as_identity("analyst") as analyst:
            query = (
                analyst.table("ad-views-a", "ad-views-b")
                .group_by("region", domain=REGIONS)
                .agg(**AGGREGATIONS)
            )
            job_started = time.monotonic()
            job = query.run()
            result = job.result(timeout=300)
            status = job.status()
        seconds = time.monotonic() - job_started
        print(f"analyst ran {query.description}: job {job.id} in {seconds:.1f} s")
        for index, party in enumerate(status.parties):
            print(f"  party {index} sent {party['bytes_sent'] / 1e6:,.1f} MB "
                  f"in {party['rounds']} rounds")  # fmt: skip
        plain = plaintext(tables)
        print()
        print_side_by_side(result, plain)
        print()
        ok = matches(result, plain)
    print(f"stopped the deployment; {time.monotonic() - started:.1f} s in all")
    print(f"matches plaintext: {'yes' if ok else 'no'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
