// One generation: the progress card (pipeline ticks, draft slots, streamed text) that turns into
// the answer with its proof: highlighted target words, a reason for every word, the re-check, and
// the drafts compared when several were written.

import { ApiError, describeError } from "./api.js";
import { $, download, fmt, h, pct, splitWords } from "./text.js";

const MAX_EXPLAIN = 1024;
// The pipeline's steps, in the order they happen (events may arrive after "writing" began).
const STEPS = ["sent", "resolved", "vocabulary", "writing", "selection", "checked"];

function targetWords(constraint) {
  const found = new Set();
  const check = (constraint.checks || [])[0] || {};
  for (const v of check.verdicts || []) {
    const d = v.details || {};
    for (const w of d.words || []) found.add(w);
    for (const group of [...(d.pairs_found || []), ...(d.sets_found || [])]) group.forEach((w) => found.add(w));
  }
  for (const [w, present] of Object.entries(check.required_words || {})) if (present) found.add(w);
  return found;
}

/** How the decoding made each draft, in a few words (see the server's services/drafts.py):
 *  greedy requests keep their predictable answer as draft 1 and sample the others. */
function draftOrigin(body, index) {
  if (body.temperature > 0) return `varied (temperature ${body.temperature})`;
  if ((body.num_beams || 1) > 1) return `beam search, beam ${index + 1}`;
  return index === 0 ? "the most predictable text (temperature 0)" : "a varied version";
}

/** Why the kept draft won, in plain words: compliance first, then the sound preferences, then
 *  how natural it reads (the server's ranking). */
function keptReason(drafts, kept) {
  const n = drafts.length;
  const rivals = drafts.filter((d) => d !== kept && d.compliant === kept.compliant);
  if (kept.compliant && !rivals.length && n > 1) return `the only one of ${n} that keeps every rule`;
  if (kept.soft_score != null && rivals.length && rivals.every((d) => d.soft_score < kept.soft_score)) {
    return `best fit to the sound preferences of ${n}`;
  }
  return `most natural of ${n}`;
}

/** The fluency score for a person: closer to 0 reads more naturally. */
function naturalness(d) {
  if (d.fluency == null) return "naturalness not measured";
  return `naturalness ${d.fluency.toFixed(2)}`;
}

export function createRunner({ api, status, request, labelOf, onState }) {
  const card = $("progress");
  const trace = $("trace");
  const drafts = $("drafts");
  const draftsBox = $("drafts-box");
  const answer = $("answer");
  const errorBox = $("run-error");
  const info = $("word-info");
  let controller = null;
  let last = null; // {req, text, constraint, usage, finish, explanation}

  function step(key, text, state = "active") {
    let li = trace.querySelector(`[data-step="${key}"]`);
    if (!li) {
      li = h("li", { "data-step": key });
      const later = [...trace.children].find((el) => STEPS.indexOf(el.dataset.step) > STEPS.indexOf(key));
      trace.insertBefore(li, later || null);
    }
    li.dataset.state = state;
    li.textContent = text;
    $("trace-summary").textContent = text;
    return li;
  }

  function draftSlot(i, text, state) {
    let slot = drafts.querySelector(`[data-draft="${i}"]`);
    if (!slot) {
      slot = h("li", { class: "draft", "data-draft": String(i) });
      const later = [...drafts.children].find((el) => Number(el.dataset.draft) > i);
      drafts.insertBefore(slot, later || null);
    }
    draftsBox.hidden = false;
    slot.dataset.state = state;
    slot.textContent = `Draft ${i + 1}: ${text}`;
  }

  function onEvent(e) {
    switch (e.type) {
      case "constraints_resolved":
        step("resolved", `Constraints resolved (${e.count})` +
          (e.required_words && e.required_words.length ? ` · suggested words: ${e.required_words.join(", ")}` : ""), "done");
        break;
      case "vocabulary_built":
        step("vocabulary", `Vocabulary built: ${fmt(e.allowed)} words (${pct(e.survival)} kept)` +
          (e.warning ? ` · ${e.warning.level === "strong" ? "below 5 %: output may be incoherent" : "below 20 %: output will be shorter than usual"}` : ""),
          e.warning ? "warn" : "done");
        break;
      case "draft":
        if (e.status === "queued") draftSlot(e.draft, "queued", "queued");
        else {
          const score = e.soft_score != null ? ` · fits the sound preferences: ${e.soft_score.toFixed(2)}` : "";
          draftSlot(e.draft, `${e.compliant ? "keeps every rule" : "breaks a rule"}${score} · ${naturalness(e)}` +
            `${e.selected ? " · kept" : ""}`, e.compliant ? "done" : "error");
        }
        break;
      case "drafts_generating":
        for (let i = 0; i < e.count; i++) draftSlot(i, "writing…", "active");
        $("drafts-summary").textContent = `Writing ${e.count} drafts; the best one is kept at the end.`;
        step("writing", `Writing ${e.count} drafts…`);
        break;
      case "selection":
        step("selection", `Best draft kept: ${e.selected.map((i) => `draft ${i + 1}`).join(", ")}`, "done");
        break;
      default:
        break;
    }
  }

  function reset() {
    $("result-empty").hidden = true;
    card.hidden = false;
    trace.replaceChildren();
    drafts.replaceChildren();
    draftsBox.hidden = true;
    $("drafts-summary").textContent = "";
    answer.replaceChildren();
    answer.hidden = false;
    answer.dataset.complete = "false";
    delete answer.dataset.text;
    errorBox.hidden = true;
    $("retry-row").hidden = true;
    $("answer-tools").hidden = true;
    $("answer-legend").hidden = true;
    $("compliance").hidden = true;
    info.hidden = true;
    $("trace-box").open = true;
  }

  function fail(err) {
    card.dataset.state = "error";
    answer.removeAttribute("aria-busy");
    const active = trace.querySelector('[data-state="active"]');
    if (active) {
      active.dataset.state = "error";
      active.textContent = `${active.textContent.replace(/…$/, "")}: failed`;
      $("trace-summary").textContent = active.textContent;
    }
    answer.hidden = !answer.textContent;
    errorBox.hidden = false;
    errorBox.replaceChildren(h("strong", { text: "The answer could not be completed. " }), describeError(err));
    $("retry-row").hidden = false;
    if (answer.textContent) answer.append(h("span", { class: "muted", text: " [incomplete]" }));
  }

  async function run() {
    const req = request();
    if (!req) return;
    reset();
    card.scrollIntoView({ block: "nearest" });
    controller = new AbortController();
    card.dataset.state = "running";
    onState(true);
    let text = "";
    let finish = null;
    let constraint = null;
    let usage = null;
    const stream = h("span", { class: "streaming" });
    answer.append(stream);
    answer.setAttribute("aria-busy", "true"); // read out once complete, not token by token
    step("sent", "Request sent…");
    try {
      await api.stream(req.body, {
        signal: controller.signal,
        onOpen: () => {
          step("sent", "Request accepted by the server", "done");
          step("writing", "Writing…");
          status.refresh();
        },
        onChunk: (chunk) => {
          if (chunk.event) onEvent(chunk.event);
          if (chunk.usage) usage = chunk.usage;
          for (const c of chunk.choices || []) {
            if (c.delta && c.delta.content) {
              text += c.delta.content;
              stream.textContent = text;
            }
            if (c.finish_reason) finish = c.finish_reason;
          }
          if (chunk.constraint) constraint = chunk.constraint;
        },
      });
    } catch (err) {
      controller = null;
      onState(false);
      if (err.name === "AbortError") {
        fail(new ApiError(0, { error: { message: "Stopped: the request was cancelled from this page.", code: "connection_lost" } }));
      } else {
        fail(err);
      }
      status.refresh();
      return;
    }
    controller = null;
    onState(false);
    status.refresh();
    const tokens = usage ? ` (${fmt(usage.completion_tokens)} tokens)` : "";
    step("writing", finish === "length" ? `Written${tokens}: stopped at the length limit` : `Written${tokens}`,
      finish === "error" ? "error" : "done");
    last = { req, text, constraint, usage, finish, explanation: null };
    hydrate(last);
  }

  function hydrate(result) {
    const { req, text, constraint } = result;
    card.dataset.state = "done";
    const ok = constraint ? constraint.compliant : null;
    step("checked", constraint ? (ok ? "Checked independently: every constraint holds" : "Checked independently: violations found")
      : "Done (no vocabulary restriction)", ok === false ? "error" : "done");
    $("trace-summary").textContent = `How this answer was made (${trace.children.length} steps)`;
    $("trace-box").open = false;
    const targets = constraint && req.mode === "sounds" ? targetWords(constraint) : new Set();
    answer.replaceChildren(...splitWords(text).map((piece) => {
      if (!piece.word) return document.createTextNode(piece.text);
      const isTarget = targets.has(piece.text.toLowerCase());
      return h("button", {
        type: "button", class: isTarget ? "w target" : "w", "data-word": piece.text,
        "data-target": isTarget ? "true" : null, "aria-describedby": isTarget ? "target-note" : null,
        onclick: () => showWord(piece.text),
      }, piece.text);
    }));
    answer.dataset.text = text;
    answer.dataset.complete = "true";
    answer.removeAttribute("aria-busy");
    if (!text) answer.append(h("span", { class: "muted", text: "(The model wrote nothing.)" }));
    $("answer-tools").hidden = false;
    const legend = $("answer-legend");
    legend.hidden = false;
    legend.textContent = req.mode === "sounds"
      ? `Highlighted: the target words (${[...targets].join(", ") || "none"}). Select any word to see why it is allowed.`
      : req.unit === "lemma"
        ? "Select any word to see its headword and the headword's rank in the list."
        : "Select any word to see its rank in the word list.";
    renderCompliance(result);
    renderDrafts(result);
    explain(result);
  }

  /** Every draft the server compared: how it was made, whether it keeps the rules, how natural
   *  it reads, its text, and which one was kept and why. */
  function renderDrafts({ req, constraint }) {
    const list = (constraint && constraint.drafts) || [];
    if (!list.length) {
      draftsBox.hidden = true;
      drafts.replaceChildren();
      return;
    }
    const sorted = [...list].sort((a, b) => a.draft - b.draft);
    const kept = sorted.filter((d) => d.selected);
    const rules = req.mode === "sounds" ? "every constraint holds" : "every word allowed";
    const broken = req.mode === "sounds" ? "breaks a constraint" : "uses words outside the vocabulary";
    drafts.replaceChildren(...sorted.map((d) => {
      const facts = [
        draftOrigin(req.body, d.draft),
        d.compliant ? `✓ ${rules}` : `✗ ${broken}`,
        d.soft_score != null ? `fits the sound preferences: ${d.soft_score.toFixed(2)} (higher fits better)` : null,
        naturalness(d),
        d.repeated_trigrams > 0 ? `repeats itself (${Math.round(100 * d.repeated_trigrams)} % of three-word groups)` : null,
      ].filter(Boolean);
      return h("li", {
        class: "draft", "data-draft": String(d.draft), "data-state": d.selected ? "kept" : d.compliant ? "done" : "error",
        "data-selected": String(Boolean(d.selected)),
      },
      h("p", { class: "draft-head" }, h("strong", { text: `Draft ${d.draft + 1}` }),
        d.selected ? h("span", { class: "kept-tag", text: `kept: ${keptReason(sorted, d)}` }) : null),
      h("p", { class: "draft-facts small", text: facts.join(" · ") }),
      h("p", { class: "draft-text", text: d.text || "(empty)" }));
    }));
    const which = kept.map((d) => `draft ${d.draft + 1}`).join(", ");
    $("drafts-summary").textContent = `${sorted.length} drafts written; the answer above is ${which} ` +
      `(kept: ${kept.length ? keptReason(sorted, kept[0]) : "none"}). Naturalness is how likely the ` +
      "model finds the text, less a penalty for repeating itself: closer to 0 reads more naturally.";
    draftsBox.hidden = false;
  }

  function renderCompliance({ req, constraint, finish }) {
    const box = $("compliance");
    const body = $("compliance-body");
    box.hidden = false;
    body.replaceChildren();
    if (!constraint) {
      box.dataset.compliant = "none";
      body.append(h("p", { text: "No vocabulary restriction was applied." }));
      return;
    }
    box.dataset.compliant = String(constraint.compliant);
    const mark = constraint.compliant ? "✓" : "✗";
    if (req.mode === "wordlist") {
      const lang = req.langName;
      const n = fmt(constraint.vocab_n_words);
      const lemma = constraint.vocab_unit === "lemma";
      body.append(h("p", { class: constraint.compliant ? "ok" : "bad" },
        h("strong", { text: `${mark} ` }),
        lemma
          ? constraint.compliant
            ? `Every word is a form of one of the ${n} most frequent headwords of the ${lang} list ` +
              `(${fmt(constraint.allowed_forms)} word forms allowed).`
            : `Some words are not forms of the ${n} most frequent headwords of the ${lang} list:`
          : constraint.compliant
            ? `Every word is one of the ${n} most frequent words of the ${lang} list.`
            : `Some words are not among the ${n} most frequent words of the ${lang} list:`));
      if (!constraint.compliant) body.append(h("ul", {}, constraint.violations.map((v) => h("li", { text: v }))));
      const listed = lemma ? `the ${fmt(constraint.allowed_forms)} allowed word forms` : `the ${n} words`;
      body.append(h("p", { class: "muted small" },
        `Re-checked by code independent of the generator. List fingerprint (sha256 of ${listed}): `,
        h("code", { title: constraint.sha256, text: `${(constraint.sha256 || "").slice(0, 16)}…` }),
        ` · backend ${constraint.backend}`));
    } else {
      body.append(h("p", { class: constraint.compliant ? "ok" : "bad" }, h("strong", { text: `${mark} ` }),
        constraint.compliant ? "Every constraint holds." : "Some constraints do not hold."));
      const verdicts = ((constraint.checks || [])[0] || {}).verdicts || [];
      const rows = verdicts.map((v) => {
        const what = v.constraint_index == null ? "Vocabulary" : labelOf(req.constraints[v.constraint_index]);
        return h("tr", { "data-ok": String(v.ok) },
          h("td", { class: "verdict", "aria-label": v.ok ? "holds" : "fails", text: v.soft ? "~" : v.ok ? "✓" : "✗" }),
          h("th", { scope: "row", text: what }),
          h("td", { text: v.message }));
      });
      body.append(h("table", { class: "verdicts" },
        h("caption", { class: "sr-only", text: "Independent re-check of each constraint" }),
        h("tbody", {}, rows)));
    }
    if (finish === "length") body.append(h("p", { class: "muted small", text: "The answer reached the length limit; raise “Maximum length” for a longer text." }));
    for (const e of constraint.errors || []) body.append(h("p", { class: "bad", text: e }));
  }

  async function explain(result) {
    const words = [...new Set(splitWords(result.text).filter((p) => p.word && p.text.length <= 64).map((p) => p.text))];
    if (!words.length || !result.constraint) return;
    const body = { words: words.slice(0, MAX_EXPLAIN), ...result.req.vocabulary };
    try {
      const data = await api.json("v1/words/explain", { method: "POST", body });
      if (result !== last) return;
      result.explanation = data;
      result.byWord = new Map(data.data.map((e) => [e.word, e]));
      for (const button of answer.querySelectorAll(".w")) {
        const e = result.byWord.get(button.dataset.word);
        if (e && !e.allowed) {
          button.classList.add("outside");
          button.setAttribute("aria-describedby", "outside-note");
        }
      }
      if (result.pending) showWord(result.pending);
    } catch (err) {
      result.explanation = { error: describeError(err) };
      if (result.pending) showWord(result.pending);
    }
  }

  function showWord(word) {
    if (!last) return;
    info.hidden = false;
    info.dataset.word = word;
    const e = last.byWord && last.byWord.get(word);
    if (!e) {
      last.pending = word;
      info.replaceChildren(h("h3", { text: word }),
        h("p", { text: last.explanation && last.explanation.error ? last.explanation.error : "Looking it up…" }));
      return;
    }
    last.pending = null;
    const lines = [];
    if (last.req.mode === "wordlist") {
      const parts = e.parts || [e];
      const n = fmt(last.req.vocabulary.vocab_n_words);
      const lemma = last.explanation && last.explanation.unit === "lemma";
      for (const p of parts) {
        const capitalized = p.reason && p.reason.includes("capitalized") ? " (capitalized)" : "";
        let text;
        if (!p.rank) text = `${p.word}: not in the list.`;
        else if (lemma) {
          const same = p.lemma && p.lemma.toLowerCase() === p.word.toLowerCase();
          text = `${same ? p.word : `${p.word} → ${p.lemma}`}: headword ${fmt(p.rank)} in the ${last.req.langName} list ` +
            `(1 = most frequent); ${p.allowed ? "within" : "outside"} your first ${n} headwords${capitalized}.`;
        } else {
          text = `${p.word}: rank ${fmt(p.rank)} in the ${last.req.langName} list (1 = most frequent); ` +
            `${p.allowed ? "within" : "outside"} your first ${n} words${capitalized}.`;
        }
        lines.push(h("p", { class: p.allowed ? "ok" : "bad", "data-lemma": lemma && p.lemma ? p.lemma : null },
          h("strong", { text: p.allowed ? "✓ " : "✗ " }), text));
      }
    } else {
      lines.push(h("p", { class: e.allowed ? "ok" : "bad" }, h("strong", { text: e.allowed ? "✓ Allowed. " : "✗ Not allowed. " }),
        e.rank ? `Rank ${fmt(e.rank)} of the English lexicon by frequency` : e.reason,
        e.zipf != null ? ` (Zipf ${e.zipf})` : "", e.syllables != null ? `; ${e.syllables} syllable${e.syllables === 1 ? "" : "s"}.` : "."));
      if (e.pronunciations.length) lines.push(h("p", {}, "Pronounced ", h("span", { class: "ipa-text", text: e.pronunciations.map((p) => `/${p}/`).join(" or ") })));
      const list = h("ul", { class: "roles" });
      for (const r of e.constraints) {
        const label = labelOf(last.req.constraints[r.constraint_index]);
        const detail = r.type === "exclude" && r.ok ? "" : ` — ${r.detail}`;
        list.append(h("li", { "data-ok": String(r.ok) }, h("strong", { text: r.role === "target" ? "Serves: " : r.ok ? "✓ " : "✗ " }),
          `${label}${detail}`));
      }
      lines.push(list);
    }
    info.replaceChildren(h("h3", {}, "Why “", word, "”?"), ...lines);
  }

  $("regenerate").addEventListener("click", run);
  $("copy").addEventListener("click", async () => {
    if (!last) return;
    try {
      await navigator.clipboard.writeText(last.text);
      $("copy-msg").textContent = "Copied.";
    } catch {
      $("copy-msg").textContent = "Copying is not allowed here: use Download text.";
    }
  });
  $("download-text").addEventListener("click", () => last && download("answer.txt", last.text, "text/plain;charset=utf-8"));
  $("download-json").addEventListener("click", () => {
    if (!last) return;
    const report = {
      request: last.req.body,
      answer: last.text,
      finish_reason: last.finish,
      usage: last.usage,
      constraint: last.constraint,
      explanation: last.explanation,
    };
    download("answer-report.json", JSON.stringify(report, null, 2), "application/json");
  });

  return {
    run,
    stop: () => controller && controller.abort(),
    running: () => controller !== null,
  };
}
