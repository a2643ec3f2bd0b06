"""Headwords and drafts on the page: what a teacher sets, what the page sends, what it shows.

One unified server (chat + batch) on the embedded SmolLM2, with a word-list folder of its own:
the shipped English list without headwords (so the page must not offer them there), the shipped
Spanish list with its headword file `wordlists/lemmas/es.tsv` (or, where that file is missing, one
derived from the list here: plural forms under their singular). Every answer is re-checked with
the suite's own checker (`wordcheck.violations(..., unit="lemma")`), reading that same file.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import wordcheck
from playwright.sync_api import Page, expect
from server_process import ServerProcess
from test_page import fill, generated_text, open_page, unnamed_controls
from wordcheck import violations, words

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "wordlists"
N_HEADWORDS = 500
PROMPT = "Escribe una historia corta sobre los perros y los gatos."


def derived_lemmas(words_by_rank: list[str], top: int = 8000) -> str:
    """A headword file for a list without one: each plural (-s, -es) whose singular is listed
    goes under that singular; headwords in the order their first form is ranked."""
    listed = set(words_by_rank[:top])
    groups: dict[str, list[str]] = {}
    for w in words_by_rank[:top]:
        base = w
        for suffix in ("es", "s"):
            stem = w[: -len(suffix)]
            if w.endswith(suffix) and len(stem) > 1 and stem in listed:
                base = stem
                break
        groups.setdefault(base, []).append(w)
    return "# derived for the browser tests\n" + "".join(
        f"{lemma}\t{' '.join(forms)}\n" for lemma, forms in groups.items()
    )


@pytest.fixture(scope="module")
def lemma_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wordlists")
    for lang in ("en", "es"):
        shutil.copy(SHIPPED / f"{lang}.txt", folder / f"{lang}.txt")
    (folder / "lemmas").mkdir()
    shipped = SHIPPED / "lemmas" / "es.tsv"
    if shipped.is_file():
        shutil.copy(shipped, folder / "lemmas" / "es.tsv")
    else:
        ranked = (folder / "es.txt").read_text(encoding="utf-8").split()
        (folder / "lemmas" / "es.tsv").write_text(derived_lemmas(ranked), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def lemma_server(lemma_dir: Path, tmp_path_factory, server_logs: Path) -> Iterator:
    tmp = tmp_path_factory.mktemp("lemma-server")
    env = {
        "MODEL_NAME": "",
        "WORDLIST_DIR": str(lemma_dir),
        "DEFAULT_NUM_BEAMS": "1",
        "GENERATION_MAX_CONCURRENCY": "4",
        "GENERATION_QUEUE_SIZE": "8",
        "TORCH_NUM_THREADS": "2",
        "BATCH_JOB_DIR": str(tmp / "jobs"),
        "BATCH_JOB_TEMP_DIR": str(tmp / "uploads"),
    }
    server = ServerProcess("wordlist_generation.main:app", env, server_logs / "lemma.log").start()
    yield server
    server.stop()


@pytest.fixture
def lemma_check(lemma_dir: Path, monkeypatch) -> None:
    """`wordcheck.violations(..., unit="lemma")` reads the server's headword file."""
    monkeypatch.setattr(
        wordcheck,
        "top_lemma_forms",
        functools.partial(wordcheck.top_lemma_forms, directory=str(lemma_dir)),
    )


def headword_of(form: str, lemma_dir: Path) -> str | None:
    """The first headword `form` is listed under, read from the file (not from the server)."""
    for line in (lemma_dir / "lemmas" / "es.tsv").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            lemma, _, forms = line.partition("\t")
            if form in forms.split():
                return lemma
    return None


def choose_headwords(page: Page, server, n: int) -> dict:
    """Spanish, counted in headwords; the list's entry as `GET /v1/wordlists` gives it."""
    with server.http() as http:
        entry = next(e for e in http.get("/v1/wordlists").json()["data"] if e["lang"] == "es")
    assert entry["units"] == ["word", "lemma"]
    unit = page.get_by_test_id("vocab-unit")
    expect(unit).to_be_hidden()  # English has no headword list here
    page.get_by_test_id("lang").select_option("es")
    expect(unit).to_be_visible()
    expect(page.get_by_test_id("lang")).to_contain_text(f"{entry['n_lemmas']:,} headwords")
    unit.select_option("lemma")
    expect(page.locator("label[for=n-words]")).to_have_text("Most frequent headwords allowed")
    expect(page.get_by_test_id("n-words")).to_have_attribute("max", str(entry["n_lemmas"]))
    fill(page, "n-words", str(entry["n_lemmas"] + 1))
    expect(page.get_by_test_id("generate")).to_be_disabled()
    expect(page.locator("#generate-reason")).to_have_text(
        f"Choose between 1 and {entry['n_lemmas']:,} headwords."
    )
    fill(page, "n-words", str(n))
    expect(page.get_by_test_id("generate")).to_be_enabled()
    return entry


def test_headwords_answer_request_and_explanations(
    page: Page, lemma_server, lemma_dir: Path, lemma_check, shots: Path
) -> None:
    open_page(page, lemma_server)
    choose_headwords(page, lemma_server, N_HEADWORDS)
    fill(page, "prompt", PROMPT)
    fill(page, "max-tokens", "24")
    with page.expect_request("**/v1/chat/completions") as sent:
        page.get_by_test_id("generate").click()
    body = sent.value.post_data_json
    assert body["vocab_lang"] == "es" and body["vocab_n_words"] == N_HEADWORDS
    assert body["vocab_unit"] == "lemma"
    assert "drafts" not in body  # one draft: nothing to send
    with page.expect_response("**/v1/words/explain") as explained:
        text = generated_text(page)
    assert words(text), text
    assert violations(text, "es", N_HEADWORDS, unit="lemma") == [], text
    compliance = page.get_by_test_id("compliance")
    expect(compliance).to_have_attribute("data-compliant", "true")
    expect(compliance).to_contain_text(
        f"a form of one of the {N_HEADWORDS} most frequent headwords of the Spanish list"
    )
    expect(page.get_by_test_id("drafts")).to_be_hidden()

    # The explanations count in the same unit and name each word's headword.
    assert json.loads(explained.value.request.post_data)["vocab_unit"] == "lemma"
    assert explained.value.json()["unit"] == "lemma"
    inflected = [(w, headword_of(w.lower(), lemma_dir)) for w in words(text)]
    inflected = [(w, lemma) for w, lemma in inflected if lemma and lemma != w.lower()]
    assert inflected, f"no word of the answer is an inflected form: {text}"
    form, lemma = inflected[0]
    page.locator(f"[data-testid=answer] .w[data-word='{form}']").first.click()
    info = page.get_by_test_id("word-info")
    expect(info).to_contain_text(f"{form} → {lemma}: headword")
    expect(info).to_contain_text(f"within your first {N_HEADWORDS} headwords")
    page.screenshot(path=shots / "headwords-answer.png", full_page=True)

    # The batch form sends the same unit with the job.
    fill(page, "max-tokens", "8")
    expect(page.locator("#batch-availability")).to_contain_text("available")
    page.get_by_test_id("batch-file").set_input_files(
        files=[{"name": "p.json", "mimeType": "application/json", "buffer": b'["Un perro."]'}]
    )
    with page.expect_request(lambda r: r.method == "POST" and "/v1/batch/jobs?" in r.url) as upload:
        page.locator("#batch-start").click()
    assert "vocab_unit=lemma" in upload.value.url, upload.value.url
    bar = page.get_by_test_id("batch-progress")
    expect(bar).to_have_attribute("data-status", "completed", timeout=120_000)
    answer = page.locator("#batch-results .batch-answer").first.inner_text()
    assert violations(answer, "es", N_HEADWORDS, unit="lemma") == [], answer


def test_three_drafts_are_shown_and_one_is_kept(
    page: Page, lemma_server, lemma_check, shots: Path
) -> None:
    open_page(page, lemma_server)
    choose_headwords(page, lemma_server, N_HEADWORDS)
    fill(page, "prompt", PROMPT)
    fill(page, "max-tokens", "16")
    generate, reason = page.get_by_test_id("generate"), page.locator("#generate-reason")

    # Beam search takes its drafts from its beams: more drafts than beams is refused here.
    page.locator("details.more summary").click()
    page.locator("#beams").fill("2")
    fill(page, "drafts-count", "3")
    expect(generate).to_be_disabled()
    expect(reason).to_contain_text("With 2 beams, at most 2 drafts")
    page.locator("#beams").fill("1")  # greedy: draft 1 is the greedy text, the others sampled
    fill(page, "drafts-count", "9")
    expect(reason).to_have_text("Choose between 1 and 8 drafts.")
    fill(page, "drafts-count", "3")
    expect(generate).to_be_enabled()
    assert unnamed_controls(page) == []

    with page.expect_request("**/v1/chat/completions") as sent:
        generate.click()
    body = sent.value.post_data_json
    assert body["drafts"] == 3 and body["temperature"] == 0 and body["num_beams"] == 1
    text = generated_text(page)
    assert violations(text, "es", N_HEADWORDS, unit="lemma") == [], text

    box = page.get_by_test_id("drafts")
    expect(box).to_be_visible()
    drafts = box.locator("li.draft")
    expect(drafts).to_have_count(3)
    kept = box.locator("li.draft[data-selected=true]")
    expect(kept).to_have_count(1)
    expect(kept).to_contain_text("kept:")
    expect(kept).to_contain_text("of 3")
    expect(kept.locator(".draft-text")).to_have_text(text)
    expect(drafts.first).to_contain_text("the most predictable text (temperature 0)")
    for i in range(3):
        expect(drafts.nth(i)).to_contain_text("naturalness")
        draft_text = drafts.nth(i).locator(".draft-text").inner_text()
        if drafts.nth(i).get_attribute("data-state") != "error":
            assert violations(draft_text, "es", N_HEADWORDS, unit="lemma") == [], draft_text
    expect(page.locator("#drafts-summary")).to_contain_text("3 drafts written")
    expect(page.locator("#trace")).to_contain_text("Best draft kept")
    assert unnamed_controls(page) == []
    page.screenshot(path=shots / "drafts-kept.png", full_page=True)
