"""Options grouped into policy objects; the flat keywords keep working and win."""

from __future__ import annotations

import pytest

from gleitzeit_jupyter.hub import HubProvider, UserError
from gleitzeit_jupyter.hub.policy import BreakerPolicy, PoolPolicy, RetryPolicy
from gleitzeit_jupyter.testing.memory import MemoryProvider


def test_flat_keywords_land_in_their_policy_and_read_back_as_attributes():
    p = MemoryProvider(max_instances=4, retries=5, breaker_half_open_max=2, call_timeout=1.5)
    assert p.pool_policy.max_instances == 4 and p.max_instances == 4
    assert p.retry_policy.retries == 5 and p.retries == 5
    assert p.breaker_policy.breaker_half_open_max == 2
    assert p.call_timeout == 1.5


def test_policy_objects_are_copied_and_flat_keywords_override_them():
    retry = RetryPolicy(retries=7, call_timeout=2.0)
    p = MemoryProvider(retry=retry, pool=PoolPolicy(max_instances=3), call_timeout=9.0)
    assert (p.retries, p.call_timeout, p.max_instances) == (7, 9.0, 3)
    p.retries = 1
    assert retry.retries == 7  # the caller's object is not shared


def test_unknown_keywords_and_wrong_policy_types_are_rejected():
    with pytest.raises(TypeError, match="retriez"):
        MemoryProvider(retriez=3)
    with pytest.raises(UserError, match="BreakerPolicy"):
        HubProvider(retry=BreakerPolicy())  # type: ignore[arg-type]
