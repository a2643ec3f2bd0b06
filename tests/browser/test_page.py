"""The page at `/`, used as a teacher or a clinician would, in headless Chromium.

Real servers: the chat app on the embedded SmolLM2 (`embedded_server`), the unified app on the
tiny model (`tiny_server`, for batch jobs) and a chat app on the fake engine whose start-up and
generations wait for files (`gated_app.py`, for the status chip). Every word an answer shows is
re-checked here with the test suite's own checkers (`wordcheck`, CMUdict in ARPAbet), never with
the server's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from playwright.sync_api import Page, expect
from server_process import ServerProcess, free_port
from test_phonology_api import minimal_pairs, prons
from wordcheck import violations, words

pytestmark = pytest.mark.slow

GENERATION_TIMEOUT_MS = 180_000
TABLET = {"width": 820, "height": 1180}


def open_page(page: Page, server, token: str | None = None) -> None:
    page.goto(f"{server.base_url}/")
    page.get_by_test_id("token").fill(token or server.token)
    page.get_by_test_id("token").press("Enter")
    if token is None:
        expect(page.locator("#token-msg")).to_contain_text("Connected")
        # The word lists are read beside the model's load; on a busy machine a server just
        # ready may still be reading them.
        expect(page.get_by_test_id("lang")).to_have_value("en", timeout=30_000)


def generated_text(page: Page) -> str:
    """Wait for the run to end; its answer as the page shows it (the run must have succeeded)."""
    page.wait_for_function(
        "() => { const p = document.querySelector('[data-testid=progress]');"
        " return p && !p.hidden && p.dataset.state !== 'running'; }",
        timeout=GENERATION_TIMEOUT_MS,
    )
    progress = page.get_by_test_id("progress")
    assert progress.get_attribute("data-state") == "done", page.locator("#run-error").inner_text()
    answer = page.get_by_test_id("answer")
    shown = answer.inner_text()
    assert shown == answer.get_attribute("data-text")
    return shown


def fill(page: Page, testid: str, value: str) -> None:
    page.get_by_test_id(testid).fill(value)


def add_constraint(page: Page, kind: str, *sounds: str, position: str | None = None) -> None:
    before = page.get_by_test_id("constraint-chip").count()
    page.get_by_test_id("constraint-type").select_option(kind)
    for i, sound in enumerate(sounds):
        page.get_by_test_id("phoneme").nth(i).fill(sound)
    if position is not None:
        page.get_by_test_id("position").select_option(position)
    page.get_by_test_id("add-constraint").click()
    expect(page.get_by_test_id("constraint-chip")).to_have_count(before + 1)


# ----------------------------------------------------------------------------- word-list mode


def test_wordlist_answer_uses_only_listed_words(page: Page, embedded_server, shots: Path) -> None:
    open_page(page, embedded_server)
    page.get_by_test_id("mode-wordlist").check()
    page.get_by_test_id("lang").select_option("es")
    fill(page, "n-words", "1000")
    fill(page, "prompt", "Escribe una historia corta sobre un gato y un perro.")
    fill(page, "max-tokens", "32")
    page.get_by_test_id("generate").click()
    expect(page.get_by_test_id("progress")).to_be_visible()
    text = generated_text(page)

    assert words(text), text
    assert violations(text, "es", 1000) == [], text
    shown = [b.inner_text() for b in page.locator("[data-testid=answer] .w").all()]
    assert shown == words(text)
    compliance = page.get_by_test_id("compliance")
    expect(compliance).to_have_attribute("data-compliant", "true")
    expect(compliance).to_contain_text("1,000 most frequent words of the Spanish list")

    # Why is this word allowed? Its rank in the list.
    page.locator("[data-testid=answer] .w").first.click()
    info = page.get_by_test_id("word-info")
    expect(info).to_contain_text("rank")
    expect(info).to_contain_text("within your first 1,000 words")
    # The chat app serves no batch routes: the panel says so instead of failing later.
    expect(page.locator("#batch-availability")).to_contain_text("No batch service answers")
    page.screenshot(path=shots / "wordlist-answer.png", full_page=True)


def test_wrong_token_shows_the_401_message(page: Page, embedded_server, shots: Path) -> None:
    open_page(page, embedded_server, token="not-the-token")
    message = page.locator("#token-msg")
    expect(message).to_contain_text("401")
    expect(message).to_contain_text("Incorrect API key provided")
    expect(page.get_by_test_id("generate")).to_be_disabled()
    expect(page.locator("#generate-reason")).to_contain_text("token was refused")
    assert page.evaluate("sessionStorage.length") == 0  # a refused token is not kept
    page.screenshot(path=shots / "token-refused.png")


def test_keyboard_only_generation(page: Page, embedded_server, shots: Path) -> None:
    """One full generation without the mouse: Tab to each control, type, Enter."""
    keys = page.keyboard

    def tab_to(testid: str, limit: int = 80) -> None:
        for _ in range(limit):
            if page.evaluate("document.activeElement?.dataset?.testid") == testid:
                return
            keys.press("Tab")
        raise AssertionError(f"Tab never reached {testid}")

    def retype(value: str) -> None:
        keys.press("Control+A")
        keys.type(value)

    page.goto(f"{embedded_server.base_url}/")
    tab_to("token")
    keys.type(embedded_server.token)
    keys.press("Enter")
    expect(page.locator("#token-msg")).to_contain_text("Connected")
    tab_to("n-words")
    retype("500")
    tab_to("prompt")
    retype("Write two sentences about the sea.")
    tab_to("max-tokens")
    retype("24")
    tab_to("generate")
    keys.press("Enter")
    text = generated_text(page)
    assert violations(text, "en", 500) == [], text
    expect(page.get_by_test_id("compliance")).to_have_attribute("data-compliant", "true")
    # The answer's words are reachable too: Tab to the first one, Enter explains it.
    for _ in range(60):
        keys.press("Tab")
        if page.evaluate("document.activeElement?.classList.contains('w')"):
            break
    else:
        raise AssertionError("Tab never reached a word of the answer")
    keys.press("Enter")
    expect(page.get_by_test_id("word-info")).to_contain_text("rank")
    page.screenshot(path=shots / "keyboard-answer.png", full_page=True)


# ---------------------------------------------------------------------------------- sound mode


def test_sound_constraints_preview_then_compliant_answer(
    page: Page, embedded_server, shots: Path
) -> None:
    open_page(page, embedded_server)
    page.get_by_test_id("mode-sounds").check()
    survival = page.get_by_test_id("survival")
    expect(survival).to_have_text("100 %")
    expect(page.locator("#trim-reminder")).to_be_visible()

    add_constraint(page, "exclude", "r")  # ASCII spelling of /ɹ/
    expect(survival).not_to_have_text("100 %")
    without_r = survival.inner_text()
    expect(page.get_by_test_id("constraint-chip").first).to_contain_text("No /ɹ/")

    # Minimal pair /t/ - /k/, the second sound typed with the IPA keyboard.
    page.get_by_test_id("constraint-type").select_option("contrastive_minpair")
    page.get_by_test_id("phoneme").nth(0).fill("t")
    page.get_by_test_id("phoneme").nth(1).focus()
    page.locator('.ipa-key[data-ipa="k"]').click()
    expect(page.get_by_test_id("phoneme").nth(1)).to_have_value("k")
    page.get_by_test_id("position").select_option("any")
    page.get_by_test_id("add-constraint").click()
    expect(page.get_by_test_id("constraint-chip")).to_have_count(2)
    expect(page.get_by_test_id("required-words")).not_to_be_empty()
    assert survival.inner_text() == without_r  # a pair requires words; it removes none
    page.screenshot(path=shots / "sounds-composed.png", full_page=True)

    fill(page, "prompt", "Write a short story about a cat.")
    fill(page, "max-tokens", "48")
    page.get_by_test_id("generate").click()
    text = generated_text(page)
    expect(page.get_by_test_id("compliance")).to_have_attribute("data-compliant", "true")
    expect(page.locator("#trace")).to_contain_text("Vocabulary built")

    said = [w.lower() for w in words(text)]
    assert said, text
    for w in said:
        assert prons(w), f"{w!r} has no pronunciation in CMUdict"
        for pron in prons(w):
            assert not {"R", "ER"} & set(pron), (w, pron)
    targets = [t.inner_text().lower() for t in page.locator("[data-target=true]").all()]
    pairs = minimal_pairs(said, "T", "K", "any")
    assert pairs, text
    assert any(a in targets and b in targets for a, b in pairs), (targets, pairs)

    page.locator("[data-target=true]").first.click()
    info = page.get_by_test_id("word-info")
    expect(info).to_contain_text("Serves")
    expect(info).to_contain_text("Minimal pair /t/ – /k/")
    page.screenshot(path=shots / "sounds-answer.png", full_page=True)
    page.set_viewport_size(TABLET)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=shots / "sounds-answer-tablet.png", full_page=True)


def test_unsatisfiable_combination_is_refused_before_generating(
    page: Page, embedded_server, shots: Path
) -> None:
    open_page(page, embedded_server)
    page.get_by_test_id("mode-sounds").check()
    add_constraint(page, "exclude", "t")
    add_constraint(page, "contrastive_minpair", "t", "k", position="any")

    unsat = page.get_by_test_id("unsat-message")
    expect(unsat).to_contain_text("constraint 0 (exclude /t/)")
    expect(page.get_by_test_id("constraint-chip").first).to_have_attribute("data-fault", "true")
    expect(page.get_by_test_id("generate")).to_be_disabled()
    expect(page.locator("#generate-reason")).to_contain_text("cannot all be satisfied")
    page.screenshot(path=shots / "sounds-unsatisfiable.png", full_page=True)

    # The message is the one a chat request with these constraints is refused with (422).
    constraints = [
        {"type": "exclude", "phonemes": ["t"]},
        {"type": "contrastive_minpair", "phoneme1": "t", "phoneme2": "k", "position": "any"},
    ]
    with embedded_server.http() as http:
        model = http.get("/v1/models").json()["data"][0]["id"]
        r = http.post(
            "/v1/chat/completions",
            json={
                "model": model,
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 16,
                "constraints": constraints,
            },
        )
    assert r.status_code == 422
    assert unsat.inner_text() == f"Server (422): {r.json()['error']['message']}"

    # Removing the constraint at fault lifts the block.
    page.get_by_role("button", name="Remove constraint: No /t/").click()
    expect(page.locator("#unsat")).to_be_hidden()
    expect(page.get_by_test_id("generate")).to_be_enabled()


# ------------------------------------------------------------------------------ batch jobs


def test_batch_upload_runs_to_completion(page: Page, tiny_server, shots: Path) -> None:
    """The unified app (what `make run` serves): a CSV of prompts, job-wide word list."""
    open_page(page, tiny_server)
    expect(page.locator("#batch-availability")).to_contain_text("available")
    fill(page, "n-words", "500")
    fill(page, "max-tokens", "8")
    csv = 'prompt\nA story about a cat.\n"Sun, sea and sand."\nA poem about rain.\n'
    page.get_by_test_id("batch-file").set_input_files(
        files=[{"name": "prompts.csv", "mimeType": "text/csv", "buffer": csv.encode()}]
    )
    expect(page.locator("#batch-summary")).to_contain_text("3 prompts")
    page.locator("#batch-start").click()
    bar = page.get_by_test_id("batch-progress")
    expect(bar).to_have_attribute("data-status", "completed", timeout=GENERATION_TIMEOUT_MS)
    assert bar.evaluate("b => [b.value, b.max]") == [3, 3]
    expect(page.locator("#batch-status")).to_contain_text("3 of 3 done")
    page.screenshot(path=shots / "batch-complete.png", full_page=True)

    with page.expect_download() as download:
        page.locator("#batch-download").click()
    results = json.loads(Path(download.value.path()).read_text())
    assert len(results) == 3
    for item in results:
        answer = item["choices"][0]["message"]["content"]
        assert violations(answer, "en", 500) == [], answer
        assert item["constraint"]["vocab_n_words"] == 500


@contextmanager
def nginx_in_front(tmp: Path, chat_port: int, batch_port: int) -> Iterator[str]:
    """nginx with the shipped configuration (rendered by the project's script) in front of the
    given chat and batch ports; its URL."""
    from test_deployment_e2e import SCRIPTS, ensure_nginx, service_env

    nginx = ensure_nginx()
    port = free_port()
    prefix = tmp / f"nginx-{port}"
    env = service_env(CHAT_PORT=str(chat_port), BATCH_PORT=str(batch_port))
    render = [sys.executable, str(SCRIPTS / "render_nginx.py"), "--standalone"]
    render += ["--prefix", str(prefix), "--listen", f"127.0.0.1:{port}"]
    subprocess.run(render, env=env, check=True, capture_output=True)
    argv = [nginx, "-p", str(prefix), "-e", str(prefix / "error.log")]
    argv += ["-c", str(prefix / "nginx.conf"), "-g", "daemon off;"]
    proc = subprocess.Popen(argv, start_new_session=True, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


@pytest.mark.e2e
def test_page_through_the_shipped_nginx_configuration(
    page: Page, tiny_server, tmp_path: Path
) -> None:
    """Served, streamed and batched through nginx; with no batch service behind it, the panel
    says so."""
    with nginx_in_front(tmp_path, tiny_server.port, tiny_server.port) as url:
        open_page(page, SimpleNamespace(base_url=url, token=tiny_server.token))
        fill(page, "max-tokens", "6")
        page.get_by_test_id("generate").click()
        assert violations(generated_text(page), "en", 1000) == []
        expect(page.locator("#batch-availability")).to_contain_text("available")
        page.get_by_test_id("batch-file").set_input_files(
            files=[
                {
                    "name": "p.json",
                    "mimeType": "application/json",
                    "buffer": b'["One sentence.", {"prompt": "Two sentences."}]',
                }
            ]
        )
        page.locator("#batch-start").click()
        expect(page.get_by_test_id("batch-progress")).to_have_attribute(
            "data-status", "completed", timeout=GENERATION_TIMEOUT_MS
        )
        expect(page.locator("#batch-status")).to_contain_text("2 of 2 done")
    with nginx_in_front(tmp_path, tiny_server.port, free_port()) as url:
        open_page(page, SimpleNamespace(base_url=url, token=tiny_server.token))
        expect(page.locator("#batch-availability")).to_contain_text(
            "The batch service is not reachable"
        )


# ----------------------------------------------------------------------------------- status


class StartingServer(ServerProcess):
    """`start()` returns as soon as /health answers, whatever it says."""

    def wait_ready(self, timeout: float) -> None:
        with httpx.Client() as http:
            for _ in range(int(timeout / 0.2)):
                try:
                    http.get(f"{self.base_url}/health", timeout=2)
                    return
                except httpx.HTTPError:
                    pass
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"server exited early; log:\n{self.log_tail()}")
                time.sleep(0.2)
        raise TimeoutError(self.log_tail())


def test_status_chip_follows_the_server(
    page: Page, browser, tmp_path: Path, server_logs: Path, shots
) -> None:
    """loading -> ready -> busy -> ready -> unreachable, each shown when /health says it; a
    request refused with 429 while busy keeps its trace and offers Regenerate."""
    gate, hold = tmp_path / "gate", tmp_path / "hold"
    port = free_port()
    server = StartingServer(
        "gated_app:app",
        {
            "GATE_FILE": str(gate),
            "HOLD_FILE": str(hold),
            "LEXICON_PRELOAD": "false",
            "GENERATION_MAX_CONCURRENCY": "1",
            "GENERATION_QUEUE_SIZE": "0",
        },
        server_logs / "gated.log",
        port=port,
        argv=[
            sys.executable,
            "-m",
            "uvicorn",
            "gated_app:app",
            "--app-dir",
            str(Path(__file__).parent),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
    ).start(timeout=120)
    try:
        chip = page.get_by_test_id("status")
        page.goto(f"{server.base_url}/")
        expect(chip).to_have_attribute("data-state", "loading")
        expect(chip).to_have_text("Loading the model…")
        page.get_by_test_id("token").fill(server.token)
        page.get_by_test_id("token").press("Enter")
        expect(page.get_by_test_id("generate")).to_be_disabled()
        expect(page.locator("#generate-reason")).to_contain_text("still loading")
        page.screenshot(path=shots / "status-loading.png")

        gate.touch()
        expect(chip).to_have_attribute("data-state", "ready", timeout=60_000)
        expect(page.locator("#token-msg")).to_contain_text("Connected")
        page.get_by_test_id("generate").click()
        expect(chip).to_have_attribute("data-state", "busy")
        expect(chip).to_contain_text("1 writing")
        page.screenshot(path=shots / "status-busy.png")

        second = browser.new_page()
        open_page(second, server)
        second.get_by_test_id("generate").click()
        refused = second.locator("#run-error")
        expect(refused).to_contain_text("The server is busy (429)")
        expect(refused).to_contain_text("Retry in")
        expect(second.locator("#trace li").first).to_have_attribute("data-state", "error")
        second.screenshot(path=shots / "busy-429.png")

        hold.touch()
        generated_text(page)
        second.locator("#regenerate").click()
        generated_text(second)
        second.close()
        expect(chip).to_have_attribute("data-state", "ready")
    finally:
        server.stop()
    expect(chip).to_have_attribute("data-state", "unreachable")
    expect(page.locator("#generate-reason")).to_contain_text("cannot be reached")
    page.screenshot(path=shots / "status-unreachable.png")


# ------------------------------------------------------------------------------ accessibility

INTERACTIVE_ROLES = {
    "button",
    "checkbox",
    "combobox",
    "link",
    "listbox",
    "menuitem",
    "radio",
    "searchbox",
    "slider",
    "spinbutton",
    "switch",
    "tab",
    "textbox",
}


def unnamed_controls(page: Page) -> list[str]:
    """Controls Chromium's accessibility tree gives no name, plus form fields with no label."""
    cdp = page.context.new_cdp_session(page)
    try:
        nodes = cdp.send("Accessibility.getFullAXTree")["nodes"]
    finally:
        cdp.detach()
    missing = [
        f"{n['role']['value']} (backend node {n.get('backendDOMNodeId')})"
        for n in nodes
        if not n.get("ignored")
        and n.get("role", {}).get("value") in INTERACTIVE_ROLES
        and not str(n.get("name", {}).get("value", "")).strip()
    ]
    missing += page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
             .filter(el => el.type !== 'hidden' && !el.labels?.length
                     && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby'))
             .map(el => `${el.tagName.toLowerCase()}#${el.id}`)"""
    )
    return missing


def test_every_control_has_an_accessible_name(page: Page, tiny_server) -> None:
    open_page(page, tiny_server)
    fill(page, "max-tokens", "6")
    page.get_by_test_id("generate").click()
    generated_text(page)
    page.locator("details.more summary").click()
    assert unnamed_controls(page) == []

    page.get_by_test_id("mode-sounds").check()
    expect(page.locator(".ipa-key").first).to_be_visible()
    add_constraint(page, "exclude", "z")
    for kind in page.get_by_test_id("constraint-type").evaluate(
        "s => [...s.options].map(o => o.value)"
    ):
        page.get_by_test_id("constraint-type").select_option(kind)
        assert unnamed_controls(page) == [], kind
