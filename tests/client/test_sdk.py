"""The SDK end to end against a real 3-party embedded deployment, checked against pandas."""

from __future__ import annotations

import ssl

import httpx
import numpy as np
import pandas as pd
import pytest

from tally.client.cluster import Cluster
from tally.client.errors import (
    InputError,
    TallyError,
    UnknownColumnError,
    UnknownDatasetError,
    ValueOutOfRangeError,
)
from tally.local_deployment import LocalDeployment
from tally.mpc.ring import reconstruct

REGIONS = ["north", "south", "east", "west", "islands"]  # "islands" never occurs


EVERY_AGGREGATION = {
    "views": ("views", "sum"),
    "n": ("views", "count"),
    "avg": ("price", "mean"),
    "low": ("views", "min"),
    "high": ("price", "max"),
}
"""Named aggregations in the form both Tally's and pandas' ``agg`` take."""


def provider_frame(seed: int, rows: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "region": rng.choice(REGIONS[:4], rows, p=[0.5, 0.3, 0.15, 0.05]),
            "views": rng.integers(-50, 1_000, rows),
            "price": np.round(rng.uniform(0, 10, rows), 2),
        }
    )


def column_shares(cluster: Cluster, dataset_id: str, column: str) -> list[np.ndarray]:
    """Every party's share of a column (the owner may read its own shares)."""
    return [
        store.get_octets(f"/v1/datasets/{dataset_id}/columns/{column}") for store in cluster.stores
    ]


def test_two_providers_padded_group_by_matches_pandas(deployment: LocalDeployment) -> None:
    frames = [provider_frame(1), provider_frame(2)]
    for provider, frame, mode in zip(
        ("provider-a", "provider-b"), frames, ("direct", "masked"), strict=True
    ):
        with deployment.connect(provider, show_progress=False) as cluster:
            dataset = cluster.upload(
                frame,
                name=f"views-{provider}",
                mode=mode,  # type: ignore[arg-type]
                domains={"region": REGIONS},
                share_with=["analyst"],
                tags={"source": "test"},
            )
            assert dataset.masked == (mode == "masked") and dataset.rows == len(frame)
    with deployment.connect("analyst", show_progress=False) as analyst:
        assert {d.name for d in analyst.datasets(tags={"source": "test"})} == {
            "views-provider-a",
            "views-provider-b",
        }
        table = analyst.table("views-provider-a", "views-provider-b")
        job = table.group_by("region", domain=REGIONS).agg(**EVERY_AGGREGATION).run()
        got = job.result(timeout=120)
        assert job.status().phase == "Succeeded"
    expected = (
        pd.concat(frames)
        .groupby("region")
        .agg(**EVERY_AGGREGATION)
        .reindex(sorted(REGIONS))
        .fillna({"views": 0, "n": 0})
        .reset_index()
    )
    assert list(got["region"]) == sorted(REGIONS)
    assert got["views"].tolist() == expected["views"].astype(int).tolist()
    assert got["n"].tolist() == expected["n"].astype(int).tolist()
    for column in ("avg", "low", "high"):
        assert np.allclose(got[column], expected[column], atol=1e-4, equal_nan=True), column
    # the job record lets another client object fetch the result again, without rerunning
    with deployment.connect("analyst", show_progress=False) as again:
        pd.testing.assert_frame_equal(again.job(job.id).result(), got)


@pytest.mark.parametrize("mode", ["direct", "masked"])
def test_shares_reconstruct_and_no_party_holds_the_values(cluster: Cluster, mode: str) -> None:
    frame = pd.DataFrame({"views": np.arange(1, 201), "price": np.linspace(0, 5, 200)})
    dataset = cluster.upload(frame, name=f"shares-{mode}", mode=mode)  # type: ignore[arg-type]
    for column, kind in (("views", "int"), ("price", "fixed")):
        shares = column_shares(cluster, dataset.id, column)
        values = reconstruct(shares).view(np.int64)
        if kind == "int":
            assert values.tolist() == frame["views"].tolist()
        else:
            assert np.allclose(values / 2**16, frame["price"], atol=2**-16)
        for share in shares:  # uniformly random words: not the values themselves
            assert (share.view(np.int64) != values).mean() > 0.95
    cluster.delete(dataset.id)
    with pytest.raises(UnknownDatasetError):
        cluster.dataset(dataset.id)


def test_hashed_text_keys_partitioned_and_dp(cluster: Cluster) -> None:
    rng = np.random.default_rng(7)
    products = [f"sku-{i:03d}" for i in range(12)]
    frame = pd.DataFrame({"product": rng.choice(products, 150), "units": rng.integers(1, 20, 150)})
    dataset = cluster.upload(frame, name="sales", partitions=2)  # text column: a hashed key
    assert dataset.partitions == 2
    table = cluster.table("sales")
    got = table.group_by("product").agg(units=("units", "sum"), n=("units", "count")).to_pandas()
    expected = frame.groupby("product").agg(units=("units", "sum"), n=("units", "count"))
    assert list(got["product"]) == sorted(set(frame["product"]))
    assert got["units"].tolist() == expected["units"].tolist()
    assert got["n"].tolist() == expected["n"].tolist()
    dp = {"epsilon": 1.0, "delta": 1e-6, "clip": {"units": [0, 20]}}
    with pytest.raises(TallyError, match="public domain"):
        table.group_by("product", max_groups=16).agg(dp=dp, n=("units", "count")).to_pandas()
    # a domain would be released once per partition: refused
    with pytest.raises(TallyError, match="once per partition"):
        table.group_by("product", domain=products).agg(dp=dp, n=("units", "count")).to_pandas()
    cluster.upload(frame, name="sales-one")
    noisy = (
        cluster.table("sales-one")
        .group_by("product", domain=products)
        .agg(dp=dp, n=("units", "count"), units=("units", "sum"))
        .to_pandas()
        .set_index("product")
    )
    # every domain key is released; the noise (80 coins) moves a count by at most 40 and
    # a sum, in units of 32 >= 20, by at most 40 units and half a unit of rounding
    assert sorted(noisy.index) == products
    assert np.all(np.abs(noisy["n"] - expected["n"].reindex(noisy.index)) <= 40)
    assert np.all(noisy["units"] % 32 == 0)
    assert np.all(np.abs(noisy["units"] - expected["units"].reindex(noisy.index)) <= 32 * 40 + 16)


def test_sum_count_and_sort(cluster: Cluster) -> None:
    frame = pd.DataFrame({"region": [3, 1, 2, 1], "views": [30, 10, 20, 15]})
    cluster.upload(frame, name="small", keys=["region"])
    table = cluster.table("small")
    assert table.sum("views").to_pandas()["views"].tolist() == [75]
    assert table.count().to_pandas()["count"].tolist() == [4]
    ordered = table.sort_by("views", descending=True).to_pandas()
    assert ordered["views"].tolist() == [30, 20, 15, 10]
    assert ordered["region"].tolist() == [3, 2, 1, 1]


def test_mistakes_are_specific_and_upload_nothing(cluster: Cluster) -> None:
    before = {d.id for d in cluster.datasets()}
    with pytest.raises(ValueOutOfRangeError, match=r"column 'views' row 1: .* outside ±2\^62"):
        cluster.upload(pd.DataFrame({"views": [1, 2**63 - 1]}), name="too-big")
    with pytest.raises(ValueOutOfRangeError, match="'many' is not a number"):
        cluster.upload(pd.DataFrame({"r": ["a", "b"], "v": ["1", "many"]}), name="text")
    assert {d.id for d in cluster.datasets()} == before
    with pytest.raises(UnknownDatasetError, match="no dataset named 'nope'"):
        cluster.table("nope")
    cluster.upload(pd.DataFrame({"region": ["a"], "views": [1]}), name="once")
    with pytest.raises(InputError, match="replace=True"):
        cluster.upload(pd.DataFrame({"region": ["a"], "views": [1]}), name="once")
    replaced = cluster.upload(pd.DataFrame({"region": ["b"], "v": [2]}), name="once", replace=True)
    assert [d.id for d in cluster.datasets(name="once")] == [replaced.id]
    table = cluster.table("once")
    with pytest.raises(UnknownColumnError, match="unknown column 'views'"):
        table.group_by("region").agg(n=("views", "count"))
    with pytest.raises(InputError, match="unknown function 'median'"):
        table.group_by("region").agg(n=("v", "median"))
    with pytest.raises(InputError, match="not a key column"):
        table.group_by("v")


def test_a_privacy_budget_caps_what_dp_jobs_spend(cluster: Cluster) -> None:
    frame = provider_frame(21, rows=40)
    with pytest.raises(InputError, match="dp_budget must be a number above 0"):
        cluster.upload(frame, name="budget-bad", dp_budget=0)
    dataset = cluster.upload(frame, name="budgeted", dp_budget=1.5)
    assert dataset.dp_budget == 1.5 and dataset.dp_spent == 0
    table = cluster.table("budgeted")
    with pytest.raises(TallyError, match="privacy budget"):
        table.group_by("region").agg(n=("views", "count")).to_pandas()
    dp = {"epsilon": 1.0, "delta": 1e-6}
    regions = sorted(REGIONS)
    noisy = table.group_by("region", domain=regions).agg(dp=dp, n=("views", "count")).to_pandas()
    assert sorted(noisy["region"]) == regions
    assert cluster.datasets(name="budgeted")[0].dp_spent == 1.0
    with pytest.raises(TallyError, match=r"0\.5 left"):
        table.group_by("region", domain=regions).agg(dp=dp, n=("views", "count")).to_pandas()
    assert cluster.datasets(name="budgeted")[0].dp_spent == 1.0


def test_min_group_size_suppresses_small_groups_at_every_party(cluster: Cluster) -> None:
    frame = provider_frame(33, rows=80)
    cluster.upload(frame, name="small-groups")
    table = cluster.table("small-groups")
    sizes = frame.groupby("region").size()
    k = int(sorted(sizes)[1]) + 1  # the two smallest groups fall below k
    got = (
        table.group_by("region", domain=REGIONS, min_group_size=k)
        .agg(total=("views", "sum"), n=("views", "count"))
        .to_pandas()
    )
    expected = frame.groupby("region").agg(total=("views", "sum"), n=("views", "count"))
    expected = expected[expected["n"] >= k]
    assert sorted(got["region"]) == sorted(expected.index)
    indexed = got.set_index("region").loc[expected.index]
    assert indexed["total"].tolist() == expected["total"].tolist()
    assert indexed["n"].tolist() == expected["n"].tolist()
    with pytest.raises(InputError, match="min_group_size must be a positive integer"):
        table.group_by("region", min_group_size=0)


def test_the_owners_policy_gates_an_analysts_jobs_at_every_party(
    deployment: LocalDeployment,
) -> None:
    frame = provider_frame(44, rows=120)
    with deployment.connect("provider-a", show_progress=False) as provider:
        dataset = provider.upload(frame, name="policed", share_with=["analyst"])
        assert provider.policy("policed").programs == ["groupby", "sum", "count"]
        provider.set_policy("policed", min_group_size=10)
    with deployment.connect("analyst", show_progress=False) as analyst:
        table = analyst.table("policed")
        assert analyst.policy("policed").min_group_size == 10  # a grantee sees the rules
        with pytest.raises(TallyError, match="only the owner"):
            analyst.set_policy("policed", min_group_size=0)
        query = table.group_by("region", domain=REGIONS).agg(n=("views", "count"))
        with pytest.raises(TallyError, match=rf"dataset {dataset.id}: .*rule min_group_size"):
            query.to_pandas()
        got = (
            table.group_by("region", domain=REGIONS, min_group_size=10)
            .agg(n=("views", "count"))
            .to_pandas()
        )
        sizes = frame.groupby("region").size()
        assert dict(zip(got["region"], got["n"], strict=True)) == {
            region: int(n) for region, n in sizes.items() if n >= 10
        }
        with pytest.raises(TallyError, match="rule programs: program 'sort'"):
            table.sort_by("views").to_pandas()
    # a policy set at one party only: that party refuses on its own
    with deployment.connect("provider-a", show_progress=False) as provider:
        provider.stores[2].request(
            "PUT", f"/v1/datasets/{dataset.id}/policy", json={"min_group_size": 50}
        )
        with pytest.raises(InputError, match="another policy at party 2"):
            provider.policy("policed")
    with (
        deployment.connect("analyst", show_progress=False) as analyst,
        pytest.raises(TallyError, match=r"party 2.*at least 50"),
    ):
        analyst.table("policed").group_by("region", domain=REGIONS, min_group_size=10).agg(
            n=("views", "count")
        ).to_pandas()


def test_every_rest_listener_of_the_embedded_deployment_is_https(
    deployment: LocalDeployment,
) -> None:
    states = [s for s in deployment.status() if s.party is not None]
    assert states and all(s.url.startswith("https://127.0.0.1:") for s in states), states
    ca = deployment.dir / "pki" / "ca.pem"
    for state in states:
        plain = state.url.replace("https://", "http://") + "/healthz"
        with pytest.raises(httpx.HTTPError):  # no plaintext listener to fall back to
            httpx.get(plain, timeout=5.0, trust_env=False)
        with pytest.raises(httpx.ConnectError):  # an unknown CA is refused by the client
            httpx.get(state.url + "/healthz", timeout=5.0, trust_env=False)
        verified = httpx.get(
            state.url + "/healthz",
            timeout=5.0,
            trust_env=False,
            verify=ssl.create_default_context(cafile=str(ca)),
        )
        assert verified.status_code == 200, state


def test_polars_style_join_filter_with_columns_group_by_matches_pandas(cluster: Cluster) -> None:
    """Issue 15's SDK front end: views ⋈ purchases (one row per user), adults only, revenue
    = price × qty, per campaign; checked against pandas.  Mistakes fail before submitting."""
    import tally

    rng = np.random.default_rng(12)
    users = rng.permutation(400)[:80]
    purchases = pd.DataFrame(
        {"user_id": users, "price": rng.integers(1, 4000, 80) / 8.0, "qty": rng.integers(1, 5, 80)}
    )
    views = pd.DataFrame(
        {
            "user_id": rng.choice(np.concatenate([users, 700 + np.arange(15)]), 130),
            "campaign": rng.choice(["spring", "summer", "autumn"], 130),
            "age": rng.integers(12, 70, 130),
        }
    )
    cluster.upload(views, name="rel-views", domains={"campaign": ["spring", "summer", "autumn"]})
    cluster.upload(purchases, name="rel-purchases")
    relation = (
        cluster.table("rel-views")
        .join(cluster.table("rel-purchases"), on="user_id")
        .filter((tally.col("age") >= 18) & ~tally.col("qty").isin([4]))
        .with_columns(revenue=tally.col("price") * tally.col("qty"))
    )
    query = relation.group_by("campaign").agg(
        revenue=("revenue", "sum"), buyers=("revenue", "count")
    )
    got = query.to_pandas(timeout=120)
    merged = views.merge(purchases, on="user_id")
    kept = merged[(merged["age"] >= 18) & ~merged["qty"].isin([4])]
    expected = (
        kept.assign(revenue=kept["price"] * kept["qty"])
        .groupby("campaign", as_index=False)
        .agg(revenue=("revenue", "sum"), buyers=("revenue", "count"))
    )
    assert list(got["campaign"]) == list(expected["campaign"])
    np.testing.assert_allclose(got["revenue"], expected["revenue"])
    np.testing.assert_array_equal(got["buyers"], expected["buyers"])
    # having=, as SQL's HAVING: the groups below the threshold are not in the result
    threshold = int(np.median(expected["buyers"]))
    busy = (
        relation.group_by("campaign")
        .agg(
            revenue=("revenue", "sum"),
            buyers=("revenue", "count"),
            having=tally.col("buyers") >= threshold,
        )
        .to_pandas(timeout=120)
    )
    kept_groups = expected[expected["buyers"] >= threshold].reset_index(drop=True)
    assert 0 < len(kept_groups) < len(expected) or len(set(expected["buyers"])) == 1
    assert list(busy["campaign"]) == list(kept_groups["campaign"])
    np.testing.assert_array_equal(busy["buyers"], kept_groups["buyers"])
    views_table = cluster.table("rel-views")
    with pytest.raises(InputError, match="having= takes an expression"):
        views_table.join(cluster.table("rel-purchases"), on="user_id").group_by("campaign").agg(
            n=("age", "count"), having="n > 3"
        )
    with pytest.raises(InputError, match="unknown column 'agee'"):
        views_table.filter(tally.col("agee") >= 18)
    with pytest.raises(InputError, match="join key 'age' differs|unknown join column"):
        views_table.join(cluster.table("rel-purchases"), on="age")
    with pytest.raises(InputError, match="truth value"):
        bool(tally.col("age") >= 18)
