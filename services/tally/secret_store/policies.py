"""Disclosure policies of committed datasets: the owner sets them, jobs are checked on them.

The policy (:class:`tally.common.policy.DisclosurePolicy`) is stored as JSON with the
dataset, except its total epsilon budget, which is the dataset's ``dp_budget`` column
(the privacy charge locks and sums against it).  Grantees may read the policy — it
says what they may do — and only the owner may change it.  The execution service
gets it, with the identities holding a ``read`` grant, with every input it describes
(:func:`input_view`).
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from tally.common.auth import Principal
from tally.common.db import session_scope
from tally.common.policy import DisclosurePolicy
from tally.secret_store.access import find_owned, find_usable, find_visible
from tally.secret_store.context import StoreContext
from tally.secret_store.datasets import to_public
from tally.secret_store.models import Dataset, Grant
from tally.secret_store.schemas import InputPublic

log = logging.getLogger(__name__)


def policy_of(dataset: Dataset) -> DisclosurePolicy:
    """The dataset's policy (the default when its owner set none), with its budget."""
    policy = DisclosurePolicy.model_validate(dataset.policy or {})
    policy.dp.budget = dataset.dp_budget
    return policy


def get_policy(ctx: StoreContext, principal: Principal, dataset_id: str) -> DisclosurePolicy:
    """The policy of a dataset the caller may see."""
    with session_scope(ctx.sessions) as session:
        return policy_of(find_visible(session, dataset_id, principal.identity))


def put_policy(
    ctx: StoreContext, principal: Principal, dataset_id: str, policy: DisclosurePolicy
) -> DisclosurePolicy:
    """Replace a dataset's policy (owner only); ``dp.budget`` becomes its epsilon budget."""
    with session_scope(ctx.sessions) as session:
        dataset = find_owned(session, dataset_id, principal.identity)
        stored = policy.model_dump(mode="json")
        stored["dp"].pop("budget", None)
        dataset.policy = stored
        dataset.dp_budget = policy.dp.budget
        session.flush()
        log.info("dataset %s: disclosure policy set by its owner", dataset_id)
        return policy_of(dataset)


def _readers(session: Session, dataset_id: str) -> list[str]:
    return sorted(
        session.scalars(
            select(Grant.grantee).where(Grant.dataset_id == dataset_id, Grant.permission == "read")
        )
    )


def input_view(
    ctx: StoreContext, principal: Principal, dataset_id: str, program: str
) -> InputPublic:
    """A job input's metadata, policy and read grantees, if ``principal`` may use it."""
    with session_scope(ctx.sessions) as session:
        dataset = find_usable(session, dataset_id, principal.identity, program)
        return InputPublic(
            **to_public(dataset).model_dump(),
            policy=policy_of(dataset),
            readers=_readers(session, dataset_id),
        )
