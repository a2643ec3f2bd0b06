// One generation: the progress card (pipeline ticks, draft slots, streamed text) that turns into
// the answer with its proof: highlighted target words, a reason for every word, the re-check.

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

export function createRunner({ api, status, request, labelOf, onState }) {
  const card = $("progress");
  const trace = $("trace");
  const drafts = $("drafts");
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
      slot = h("div", { class: "draft", "data-draft": String(i) });
      drafts.append(slot);
    }
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
          const score = e.soft_score != null ? ` · score ${e.soft_score}` : "";
          draftSlot(e.draft, `${e.compliant ? "compliant" : "violations"}${score}${e.selected ? " · chosen" : ""}`,
            e.compliant ? "done" : "error");
        }
        break;
      case "drafts_generating":
        drafts.querySelectorAll(".draft").forEach((d) => {
          d.dataset.state = "active";
          d.textContent = `Draft ${Number(d.dataset.draft) + 1}: writing…`;
        });
        step("writing", `Writing ${e.count} drafts…`);
        break;
      case "selection":
        step("selection", `Best draft chosen: ${e.selected.map((i) => `#${i + 1}`).join(", ")}`, "done");
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
      : "Select any word to see its rank in the word list.";
    renderCompliance(result);
    explain(result);
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
      body.append(h("p", { class: constraint.compliant ? "ok" : "bad" },
        h("strong", { text: `${mark} ` }),
        constraint.compliant
          ? `Every word is one of the ${fmt(constraint.vocab_n_words)} most frequent words of the ${lang} list.`
          : `Some words are not among the ${fmt(constraint.vocab_n_words)} most frequent words of the ${lang} list:`));
      if (!constraint.compliant) body.append(h("ul", {}, constraint.violations.map((v) => h("li", { text: v }))));
      body.append(h("p", { class: "muted small" },
        `Re-checked by code independent of the generator. List fingerprint (sha256 of the ${fmt(constraint.vocab_n_words)} words): `,
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
      for (const p of parts) lines.push(h("p", { class: p.allowed ? "ok" : "bad" }, h("strong", { text: p.allowed ? "✓ " : "✗ " }),
        p.rank ? `${p.word}: rank ${fmt(p.rank)} in the ${last.req.langName} list (1 = most frequent); ` +
          `${p.allowed ? "within" : "outside"} your first ${fmt(last.req.vocabulary.vocab_n_words)} words${p.reason.includes("capitalized") ? " (capitalized)" : ""}.`
          : `${p.word}: not in the list.`));
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
