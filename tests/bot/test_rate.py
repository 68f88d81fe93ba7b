"""Rate limits: token buckets per member, per server and per API key, on a clock the test
drives."""

from __future__ import annotations

import pytest

from bot.moderation.rate import Buckets, Limited, RateLimits, TokenBucket

ALICE, BOB, CAROL = 1, 2, 3
GUILD, OTHER_GUILD = 100, 200
KEY, OTHER_KEY = 7, 8


def test_a_bucket_allows_its_burst_then_refills_at_its_pace() -> None:
    bucket = TokenBucket(burst=3, per_minute=6)  # a token every 10 s
    for _ in range(3):
        assert bucket.wait(0.0) == 0
        bucket.take(0.0)
    assert bucket.wait(0.0) == pytest.approx(10.0)
    assert bucket.wait(5.0) == pytest.approx(5.0)
    assert bucket.wait(10.0) == 0
    bucket.take(10.0)
    # A long rest refills no more than the burst.
    assert bucket.wait(1000.0) == 0
    for _ in range(3):
        bucket.take(1000.0)
    assert bucket.wait(1000.0) > 0


def test_a_member_flooding_is_refused_with_when_to_retry_and_others_are_not() -> None:
    limits = RateLimits(member_burst=5, member_per_minute=10, guild_burst=30, guild_per_minute=120)
    outcomes = [limits.acquire(ALICE, GUILD, now=n * 0.1) for n in range(100)]  # 100 in 10 s
    allowed = [n for n, outcome in enumerate(outcomes) if outcome is None]
    # The burst at once, then one every 6 s: at 6.0 s (after the 5 at 0-0.4 s).
    assert allowed == [0, 1, 2, 3, 4, 60]
    refused = outcomes[5]
    assert isinstance(refused, Limited) and refused.scope == "member"
    assert refused.retry_after == pytest.approx(6.0 - 0.5)
    assert "try again in 6 seconds" in refused.message()
    # Bob is untouched by Alice's flood, and her refusals did not use up the server.
    assert all(limits.acquire(BOB, GUILD, now=10.0) is None for _ in range(5))


def test_a_server_limit_holds_across_members_but_not_other_servers() -> None:
    limits = RateLimits(member_burst=2, member_per_minute=60, guild_burst=3, guild_per_minute=6)
    assert limits.acquire(ALICE, GUILD, 0.0) is None
    assert limits.acquire(ALICE, GUILD, 0.0) is None
    assert limits.acquire(BOB, GUILD, 0.0) is None
    refused = limits.acquire(CAROL, GUILD, 0.0)
    assert refused is not None and refused.scope == "server"
    assert "This server is sending" in refused.message()
    assert limits.acquire(CAROL, OTHER_GUILD, 0.0) is None
    # 10 s later the server has one token again; Carol's own bucket is still full.
    assert limits.acquire(CAROL, GUILD, 10.0) is None
    refused = limits.acquire(CAROL, GUILD, 10.0)
    assert refused is not None and refused.scope == "server"


def test_a_burst_of_zero_lifts_that_limit() -> None:
    limits = RateLimits(member_burst=0, member_per_minute=1, guild_burst=0, guild_per_minute=1)
    assert all(limits.acquire(ALICE, None, 0.0) is None for _ in range(1000))


def test_long_waits_are_said_in_minutes() -> None:
    assert Limited("member", 299.2).message().endswith("try again in 5 minutes.")
    assert Limited("member", 0.01).message().endswith("try again in 1 second.")


def test_an_api_key_has_a_minutes_burst_then_one_request_per_interval() -> None:
    keys = Buckets("key", burst=3, per_minute=3)  # as the HTTP API builds it
    assert [keys.acquire(KEY, 0.0) for _ in range(3)] == [None, None, None]
    refused = keys.acquire(KEY, 0.0)
    assert refused is not None and refused.scope == "key"
    assert refused.retry_after == pytest.approx(20.0)
    assert keys.acquire(OTHER_KEY, 0.0) is None  # another key has its own bucket
    # Refused retries took nothing: the token is there exactly when it was promised.
    retried = keys.acquire(KEY, 19.0)
    assert retried is not None and retried.retry_after == pytest.approx(1.0)
    assert keys.acquire(KEY, 20.0) is None
    assert keys.acquire(KEY, 20.0) is not None


def test_no_request_rate_means_no_limit() -> None:
    keys = Buckets("key", burst=0, per_minute=0)
    assert all(keys.acquire(KEY, 0.0) is None for _ in range(1000))
