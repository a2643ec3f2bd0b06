// Batch jobs from the page: a file of prompts, the job-wide settings chosen above, a progress bar
// from the job's status, and the results to download. Says so when no batch service answers.

import { ApiError, describeError } from "./api.js";
import { $, download, fmt, h, parseCsv } from "./text.js";

const TERMINAL = new Set(["completed", "failed", "cancelled", "expired"]);

/** Prompts (strings) or chat requests (objects) from a JSON, CSV or plain-text file. */
export function readPrompts(name, text) {
  const lower = name.toLowerCase();
  if (lower.endsWith(".json") || /^\s*\[/.test(text)) {
    let data;
    try {
      data = JSON.parse(text);
    } catch (exc) {
      throw new Error(`${name} is not valid JSON (${exc.message}).`);
    }
    if (!Array.isArray(data) || !data.length) throw new Error(`${name} must hold a non-empty JSON list.`);
    return data.map((item, i) => {
      if (typeof item === "string" && item.trim()) return item.trim();
      if (item && typeof item === "object" && Array.isArray(item.messages)) return item;
      if (item && typeof item === "object" && typeof item.prompt === "string") return item.prompt;
      throw new Error(`Item ${i + 1} of ${name} is neither a prompt, nor {"prompt": …}, nor a chat request.`);
    });
  }
  if (lower.endsWith(".csv")) {
    const rows = parseCsv(text);
    if (!rows.length) throw new Error(`${name} has no rows.`);
    const col = rows[0].findIndex((f) => f.trim().toLowerCase() === "prompt");
    if (col >= 0) return rows.slice(1).map((r) => (r[col] || "").trim()).filter(Boolean);
    if (rows.every((r) => r.length === 1)) return rows.map((r) => r[0].trim()).filter(Boolean);
    throw new Error(`${name} has several columns but none is named “prompt”.`);
  }
  return text.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
}

export function createBatch({ api, settings }) {
  const fileInput = $("batch-file");
  const start = $("batch-start");
  const availability = $("batch-availability");
  const errorBox = $("batch-error");
  let available = false;
  let prompts = null;
  let job = null;
  let results = null;
  let timer = null;

  function showError(message) {
    errorBox.hidden = !message;
    errorBox.textContent = message || "";
  }

  function update() {
    start.disabled = !(available && prompts && prompts.length && !(job && !TERMINAL.has(job.status)));
  }

  async function check() {
    try {
      await api.json("v1/batch/jobs?limit=1");
      available = true;
      availability.dataset.state = "available";
      availability.textContent = "Batch jobs are available on this server.";
    } catch (err) {
      available = false;
      availability.dataset.state = "unavailable";
      if (err instanceof ApiError && err.status === 404) {
        availability.textContent = "No batch service answers at this address: this server runs chat only. "
          + "Start chat and batch together with “make run”, or run the batch service behind the shipped nginx configuration.";
      } else if (err instanceof ApiError && (err.status === 502 || err.status === 503 || err.status === 0)) {
        availability.textContent = `The batch service is not reachable right now: ${err.message}`;
      } else {
        availability.textContent = `Batch jobs cannot be used: ${describeError(err)}`;
      }
    }
    update();
  }

  fileInput.addEventListener("change", async () => {
    prompts = null;
    showError("");
    const file = fileInput.files[0];
    if (!file) {
      $("batch-summary").textContent = "";
      update();
      return;
    }
    try {
      prompts = readPrompts(file.name, await file.text());
      if (!prompts.length) throw new Error(`${file.name} holds no prompt.`);
      $("batch-summary").textContent = `${fmt(prompts.length)} prompt${prompts.length > 1 ? "s" : ""} read from ${file.name}.`;
    } catch (exc) {
      prompts = null;
      $("batch-summary").textContent = "";
      showError(exc.message);
    }
    update();
  });

  async function submit() {
    const s = settings();
    if (!s || !prompts) return;
    showError("");
    const items = prompts.map((p) => {
      const item = typeof p === "string" ? { messages: [{ role: "user", content: p }] } : { ...p };
      item.model = item.model || s.model;
      if (s.sendDrafts && item.drafts === undefined) item.drafts = s.drafts;
      if (s.temperature > 0) {
        item.temperature = s.temperature;
        if (s.seed != null) item.seed = s.seed;
      }
      return item;
    });
    const query = new URLSearchParams({ max_tokens: String(s.maxTokens) });
    if (!(s.temperature > 0)) query.set("num_beams", String(s.beams));
    if (s.vocabulary.vocab_lang) query.set("vocab_lang", s.vocabulary.vocab_lang);
    if (s.vocabulary.vocab_n_words != null) query.set("vocab_n_words", String(s.vocabulary.vocab_n_words));
    if (s.vocabulary.vocab_unit) query.set("vocab_unit", s.vocabulary.vocab_unit);
    const form = new FormData();
    form.append("file", new Blob([JSON.stringify(items)], { type: "application/json" }), "prompts.json");
    if (s.vocabulary.constraints) form.append("constraints", JSON.stringify(s.vocabulary.constraints));
    start.disabled = true;
    try {
      job = await api.upload(`v1/batch/jobs?${query}`, form);
      job.prompts = items.map((item) => {
        const user = item.messages.filter((m) => m.role === "user").pop();
        return user && typeof user.content === "string" ? user.content : null;
      });
    } catch (err) {
      job = null;
      showError(describeError(err));
      update();
      return;
    }
    results = null;
    $("batch-run").hidden = false;
    $("batch-download").hidden = true;
    $("batch-cancel").hidden = false;
    $("batch-results").replaceChildren();
    render({ status: job.status, completed: 0, total: items.length });
    poll();
  }

  function render(view) {
    const bar = $("batch-progress");
    bar.max = Math.max(1, view.total || 1);
    bar.value = view.completed || 0;
    bar.dataset.status = view.status;
    const failed = view.failed ? `, ${fmt(view.failed)} failed` : "";
    $("batch-status").textContent = `Job ${view.status}: ${fmt(view.completed || 0)} of ${fmt(view.total || 0)} done${failed}`;
  }

  async function poll() {
    clearTimeout(timer);
    if (!job) return;
    try {
      const view = await api.json(`v1/batch/jobs/${encodeURIComponent(job.job_id)}`);
      job = { ...job, ...view };
      render(view);
      if (TERMINAL.has(view.status)) return finished(view);
    } catch (err) {
      showError(describeError(err));
    }
    timer = setTimeout(poll, 1000);
    update();
  }

  async function finished(view) {
    $("batch-cancel").hidden = true;
    update();
    if (view.status !== "completed") {
      showError(view.error ? `The job ${view.status}: ${view.error.message || JSON.stringify(view.error)}` : `The job was ${view.status}.`);
      return;
    }
    try {
      results = await api.json(`v1/batch/jobs/${encodeURIComponent(job.job_id)}/results`);
    } catch (err) {
      showError(describeError(err));
      return;
    }
    $("batch-download").hidden = false;
    $("batch-results").replaceChildren(...results.slice(0, 5).map((r, i) => {
      const text = r.choices && r.choices[0] ? r.choices[0].message.content : (r.error && r.error.message) || "";
      const ok = r.constraint ? (r.constraint.compliant ? " ✓ every word allowed" : " ✗ violations") : "";
      const asked = job.prompts[i];
      return h("li", {}, asked ? h("span", { class: "batch-prompt", text: `${asked} → ` }) : null,
        h("span", { class: "batch-answer", text }), h("span", { class: "muted", text: ok }));
    }));
    if (results.length > 5) $("batch-results").append(h("li", { class: "muted", text: `… and ${fmt(results.length - 5)} more in the download.` }));
  }

  start.addEventListener("click", submit);
  $("batch-cancel").addEventListener("click", async () => {
    if (!job) return;
    try {
      await api.json(`v1/batch/jobs/${encodeURIComponent(job.job_id)}/cancel`, { method: "POST" });
    } catch (err) {
      showError(describeError(err));
    }
    poll();
  });
  $("batch-download").addEventListener("click", () => {
    if (results) download(`batch-${job.job_id}-results.json`, JSON.stringify(results, null, 2), "application/json");
  });

  return { check, update };
}
