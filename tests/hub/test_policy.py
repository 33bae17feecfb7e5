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


@pytest.mark.parametrize(
    "option, value",
    [
        ("retries", -1),
        ("retries", "2"),
        ("call_timeout", 0),
        ("call_timeout", -1.0),
        ("call_timeout", float("nan")),
        ("first_token_timeout", 0),
        ("max_queue", -5),
        ("max_instances", True),
        ("max_instances", 2.5),
        ("breaker_half_open_max", 0),
        ("breaker_failure_threshold", 0),
        ("breaker_recovery_timeout", -1),
        ("health_check_interval", 0),
        ("health_check_timeout", -1),
        ("unhealthy_threshold", 0),
        ("retry_budget_ttl", 0),
        ("retry_budget_ratio", -0.1),
        ("shutdown_grace", -1),
        ("enable_sharing", "yes"),
    ],
)
def test_a_bad_option_value_is_a_user_error_naming_it_when_given(option, value):
    with pytest.raises(UserError, match=option):
        MemoryProvider(**{option: value})
    policy = {"retries": RetryPolicy, "call_timeout": RetryPolicy, "max_queue": PoolPolicy}.get(
        option
    )
    if policy is not None:  # the same value inside a policy object
        with pytest.raises(UserError, match=option):
            MemoryProvider(
                **{policy.__name__.removesuffix("Policy").lower(): policy(**{option: value})}
            )
    p = MemoryProvider()
    with pytest.raises(UserError, match=option):
        setattr(p, option, value)


def test_min_instances_above_max_instances_is_a_user_error():
    with pytest.raises(UserError, match="min_instances"):
        MemoryProvider(min_instances=3, max_instances=2)


def test_numpy_numbers_are_accepted_as_plain_python_numbers():
    import numpy as np  # a dependency through pandas

    p = MemoryProvider(retries=np.int64(3), call_timeout=np.float32(1.5), max_instances=np.int8(2))
    assert (p.retries, p.call_timeout, p.max_instances) == (3, 1.5, 2)
    assert type(p.retries) is int and type(p.call_timeout) is float
