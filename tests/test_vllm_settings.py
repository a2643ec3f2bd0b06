"""ENGINE=vllm settings and the pool's choice rules, without a server (the engine itself is tested
against real vLLM servers in tests_vllm/, `make test-vllm`)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from wordlist_generation.engine.pool import UpstreamPool
from wordlist_generation.errors import UpstreamUnavailable
from wordlist_generation.settings import Settings


def test_vllm_needs_urls_and_decodes_greedy_by_default() -> None:
    with pytest.raises(ValidationError, match="VLLM_URLS"):
        Settings(ENGINE="vllm", _env_file=None)
    s = Settings(ENGINE="vllm", VLLM_URLS="http://a:8000, http://b:8000", _env_file=None)
    assert s.VLLM_URLS == ["http://a:8000", "http://b:8000"]
    assert s.DEFAULT_NUM_BEAMS == 1 and s.BATCH_DEFAULT_NUM_BEAMS == 1
    assert Settings(_env_file=None).DEFAULT_NUM_BEAMS == 10  # the local engine is unchanged


@pytest.mark.parametrize("name", ["DEFAULT_NUM_BEAMS", "BATCH_DEFAULT_NUM_BEAMS"])
def test_a_beam_default_set_for_vllm_is_refused_not_dropped(name: str) -> None:
    with pytest.raises(ValidationError, match=name):
        Settings(ENGINE="vllm", VLLM_URLS="http://a:8000", _env_file=None, **{name: 4})


def test_urls_must_be_http() -> None:
    with pytest.raises(ValidationError, match="not an http"):
        Settings(ENGINE="vllm", VLLM_URLS="a:8000", _env_file=None)


def test_the_api_key_is_a_secret() -> None:
    s = Settings(ENGINE="vllm", VLLM_URLS="http://a:8000", VLLM_API_KEY="k-123", _env_file=None)
    assert "k-123" not in repr(s) and "k-123" not in str(s.model_dump())


def pool_of(n: int) -> UpstreamPool:
    pool = UpstreamPool([f"http://h{i}:8000" for i in range(n)])
    for u in pool.upstreams:
        u.up = True
    return pool


def test_least_busy_first_and_ties_round_robin() -> None:
    pool = pool_of(3)
    first = [pool.acquire() for _ in range(3)]
    assert len({u.url for u in first}) == 3  # spread over every server
    pool.release(first[1])
    assert pool.acquire() is first[1]  # the only one with nothing in flight
    for u in pool.upstreams:
        while u.in_flight:
            pool.release(u)
    seen = []
    for _ in range(6):  # idle pool: requests that finish at once still rotate
        u = pool.acquire()
        seen.append(u.url)
        pool.release(u)
    assert len(set(seen)) == 3


def test_a_server_marked_down_is_skipped_and_none_up_is_a_503() -> None:
    pool = pool_of(2)
    a, b = pool.upstreams
    pool.mark_down(a, "ConnectError")
    assert all(pool.acquire() is b for _ in range(3))
    assert a.failures == 1 and pool.summary()["up"] == 1
    with pytest.raises(UpstreamUnavailable) as err:
        pool.acquire(exclude=[b])
    assert err.value.status_code == 503 and err.value.code == "upstream_unavailable"
    pool.mark_down(b, "ReadError")
    with pytest.raises(UpstreamUnavailable, match="ConnectError"):
        pool.acquire()


def test_a_health_check_of_an_unreachable_server_takes_it_out() -> None:
    from server_process import free_port

    pool = UpstreamPool([f"http://127.0.0.1:{free_port()}"], connect_timeout=0.5)
    [u] = pool.upstreams
    u.up = True
    assert pool.check(u) is False
    assert not u.up and u.last_error and pool.summary()["servers"][0]["up"] is False
