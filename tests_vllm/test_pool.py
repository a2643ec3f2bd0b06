"""The upstream pool and its failures, with real vLLM servers: a second server on another port
shares the load and is stopped mid-test (its requests fail over), a server taken out is taken
back once it answers, and the failures a running upstream can cause are OpenAI-shaped 502/504
(a pool with no upstream up, 503, is tests/test_vllm_gateway_down.py in the main suite)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import openai
import pytest
from fakes import TextConstraint
from server_process import ServerProcess
from test_gateway import ES, constraint_of, gateway_env
from vllm_env import SERVED, VLLMServer
from wordcheck import violations

from wordlist_generation.constraints.base import ExportedGrammar
from wordlist_generation.engine.params import GenerationJob, SamplingParams
from wordlist_generation.engine.pool import UpstreamPool
from wordlist_generation.engine.vllm import VLLMEngine
from wordlist_generation.errors import BadGateway, UpstreamUnavailable

REPO = Path(__file__).resolve().parents[1]


def served(url: str) -> int:
    """Requests a vLLM server has finished (its Prometheus counter)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("vllm:request_success_total")
        )
    )


@pytest.fixture(scope="module")
def second_server(vllm_model):
    # The first server's settings, so that its start reuses vLLM's compile cache (~1 minute).
    server = VLLMServer(vllm_model, REPO / "var" / "vllm-test-2.log")
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


def test_two_servers_share_the_load_and_one_that_dies_fails_over(
    vllm_server, second_server, tmp_path
) -> None:
    gateway = ServerProcess(
        "wordlist_generation.app_chat:app",
        # A long health interval: the gateway learns that a server died from a request.
        gateway_env(
            f"{vllm_server},{second_server.url}", tmp_path, VLLM_HEALTH_INTERVAL_SECONDS="300"
        ),
        REPO / "var" / "vllm-gateway-pool.log",
    ).start(timeout=300)
    try:
        client = gateway.client(timeout=300)
        before = served(vllm_server), served(second_server.url)

        async def four() -> list:
            aclient = openai.AsyncOpenAI(
                base_url=f"{gateway.base_url}/v1", api_key=gateway.token, max_retries=0
            )
            prompts = ["el gato", "la casa", "el mar", "el pan"]
            return await asyncio.gather(
                *(
                    aclient.chat.completions.create(
                        model=SERVED,
                        messages=[{"role": "user", "content": f"Escribe sobre {p}."}],
                        max_tokens=24,
                        temperature=0,
                        extra_body=ES,
                    )
                    for p in prompts
                )
            )

        for response in asyncio.run(four()):
            assert constraint_of(response)["compliant"]
        after = served(vllm_server), served(second_server.url)
        assert after[0] - before[0] >= 1 and after[1] - before[1] >= 1, (before, after)

        second_server.stop()  # dies; the gateway still counts it as up
        for prompt in ["Escribe sobre el perro.", "Escribe sobre la luna."]:
            response = client.chat.completions.create(
                model=SERVED,
                messages=[{"role": "user", "content": prompt}],
                max_tokens=24,
                temperature=0,
                extra_body=ES,
            )
            text = response.choices[0].message.content
            assert violations(text, "es", 1000) == [], text
        with gateway.http() as http:
            health = http.get("/health").json()
        servers = {s["url"]: s for s in health["upstreams"]["servers"]}
        assert health["upstreams"]["up"] == 1, health
        assert not servers[second_server.url]["up"] and servers[second_server.url]["failures"] >= 1
    finally:
        gateway.stop()


def test_a_server_taken_out_is_taken_back_once_it_answers(vllm_server) -> None:
    pool = UpstreamPool([vllm_server], model=SERVED)
    assert pool.check_all() == 1
    [upstream] = pool.upstreams
    pool.mark_down(upstream, "ConnectError")
    with pytest.raises(UpstreamUnavailable):
        pool.acquire()
    assert pool.check(upstream) and pool.acquire() is upstream


def test_an_upstream_slower_than_the_read_timeout_is_a_504(vllm_server, tmp_path) -> None:
    gateway = ServerProcess(
        "wordlist_generation.app_chat:app",
        gateway_env(vllm_server, tmp_path, VLLM_READ_TIMEOUT_SECONDS="0.001"),
        REPO / "var" / "vllm-gateway-timeout.log",
    ).start(timeout=300)
    try:
        with gateway.http() as http:
            r = http.post(
                "/v1/chat/completions",
                json={
                    "model": SERVED,
                    "messages": [{"role": "user", "content": "Hola."}],
                    "max_tokens": 64,
                    **ES,
                },
            )
        assert r.status_code == 504, r.text
        assert r.json()["error"]["code"] == "upstream_timeout"
    finally:
        gateway.stop()


class _BrokenGrammar(TextConstraint):
    """A constraint whose exported grammar no llguidance accepts."""

    def exported_grammar(self) -> ExportedGrammar:
        return ExportedGrammar("lark", "start: %%% not a grammar")


def test_a_grammar_the_upstream_refuses_is_a_502(vllm_server, vllm_model) -> None:
    from transformers import AutoTokenizer

    pool = UpstreamPool([vllm_server], model=SERVED)
    pool.check_all()
    engine = VLLMEngine(pool, AutoTokenizer.from_pretrained(vllm_model), model=SERVED)
    job = GenerationJob(
        prompt_ids=engine.encode_chat([{"role": "user", "content": "Hola."}]),
        params=SamplingParams(max_new_tokens=8),
        constraint=_BrokenGrammar(),
    )

    async def run() -> None:
        await engine.submit([job])

    with pytest.raises(BadGateway) as err:
        asyncio.run(run())
    assert err.value.status_code == 502 and "refused" in err.value.message
    assert pool.up_count == 1  # a refused request is not a dead server
