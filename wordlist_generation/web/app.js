// The page: connection (status chip, token), the two modes, the Generate button and why it is
// disabled. Everything goes through the server's public routes.

import { createApi, describeError } from "./api.js";
import { createBatch } from "./batch.js";
import { createComposer } from "./composer.js";
import { createRunner } from "./generate.js";
import { startStatus } from "./status.js";
import { $, fmt, h } from "./text.js";

const TOKEN_KEY = "wordlist-generation-token";
// The most drafts the page offers (the server's default MAX_DRAFTS; a lower limit there is a 400
// naming `drafts`, shown as such).
const MAX_DRAFTS = 8;

const app = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  tokenState: "none", // none | checking | ok | refused | waiting
  model: null,
  lists: [],
  generating: false,
  status: { state: "unknown" },
};

const api = createApi(() => app.token);
const languageNames = (() => {
  try {
    return new Intl.DisplayNames(["en"], { type: "language" });
  } catch {
    return null;
  }
})();

function languageName(code) {
  try {
    const name = languageNames && languageNames.of(code);
    return name && name !== code ? name : code;
  } catch {
    return code;
  }
}

function mode() {
  return $("mode-sounds").checked ? "sounds" : "wordlist";
}

function intValue(id) {
  const raw = $(id).value.trim();
  return /^-?\d+$/.test(raw) ? Number(raw) : null;
}

// ------------------------------------------------------------------------------------- token

function tokenMessage(text, tone = "") {
  const el = $("token-msg");
  el.textContent = text;
  el.dataset.tone = tone;
}

async function connect({ again = false } = {}) {
  const value = $("token").value.trim();
  // Enter both submits the form and commits the field: one check per token is enough.
  if (!again && value && value === app.token && (app.tokenState === "checking" || app.tokenState === "ok")) return;
  app.token = value;
  if (!value) {
    app.tokenState = "none";
    tokenMessage("Enter the access token given by whoever runs this server.");
    updateGenerate();
    return;
  }
  app.tokenState = "checking";
  tokenMessage("Checking the token…");
  updateGenerate();
  try {
    const models = await api.json("v1/models");
    app.model = models.data[0].id;
    app.tokenState = "ok";
    sessionStorage.setItem(TOKEN_KEY, value);
    tokenMessage(`Connected (model ${app.model}). The token stays in this browser tab only.`, "ok");
    await loadMeta();
  } catch (err) {
    if (err.status === 401) {
      app.tokenState = "refused";
      sessionStorage.removeItem(TOKEN_KEY);
      tokenMessage(describeError(err), "bad");
    } else {
      app.tokenState = "waiting";
      tokenMessage(err.status === 503 ? "The server is still loading; the token is checked as soon as it is ready." : describeError(err), "bad");
    }
  }
  updateGenerate();
}

async function loadMeta() {
  const lists = await api.json("v1/wordlists");
  app.lists = lists.data.filter((l) => l.n_words > 0);
  const select = $("lang");
  const previous = select.value;
  select.replaceChildren(...app.lists.map((l) => h("option", {
    value: l.lang,
    text: `${languageName(l.lang)} (${l.lang}) · ${fmt(l.n_words)} words` + (hasLemmas(l) ? ` · ${fmt(l.n_lemmas)} headwords` : ""),
  })));
  const wanted = [previous, (navigator.language || "").slice(0, 2), "en"].find((c) => app.lists.some((l) => l.lang === c));
  if (wanted) select.value = wanted;
  onLanguage();
  batch.check();
  if (!composer.hasInventory()) {
    api.json("v1/phonemes")
      .then((body) => {
        composer.setInventory(body);
        updateGenerate();
      })
      .catch((err) => {
        $("whatif").textContent = `The sound inventory could not be loaded: ${describeError(err)}`;
      });
  }
}

/** Whether a `GET /v1/wordlists` entry can be counted in headwords. */
function hasLemmas(entry) {
  return Boolean(entry && Array.isArray(entry.units) && entry.units.includes("lemma") && entry.n_lemmas > 0);
}

function currentList() {
  return app.lists.find((l) => l.lang === $("lang").value) || null;
}

/** What "Most frequent … allowed" counts: "lemma" (headwords) or "word" (word forms). */
function unit() {
  return hasLemmas(currentList()) && $("vocab-unit").value === "lemma" ? "lemma" : "word";
}

/** How many units the chosen list holds, in the chosen unit. */
function unitLimit(entry) {
  return unit() === "lemma" ? entry.n_lemmas : entry.n_words;
}

function unitName() {
  return unit() === "lemma" ? "headwords" : "words";
}

function onLanguage() {
  const entry = currentList();
  const lemmas = hasLemmas(entry);
  $("unit-field").hidden = !lemmas;
  if (!lemmas) $("vocab-unit").value = "word";
  onUnit();
}

function onUnit() {
  const entry = currentList();
  const lemma = unit() === "lemma";
  if (entry) $("n-words").max = String(unitLimit(entry));
  $("n-words-label").textContent = lemma ? "Most frequent headwords allowed" : "Most frequent words allowed";
  const help = $("unit-help");
  // Also describes the number field: empty (and hidden) where the list has no headwords.
  help.hidden = !hasLemmas(entry);
  if (help.hidden) help.textContent = "";
  else if (lemma) {
    help.textContent = "Counted in headwords: each headword allows all its forms (perro allows perro and perros). " +
      `The ${languageName(entry.lang)} list has ${fmt(entry.n_lemmas)} headwords.`;
  } else help.textContent = "Counted in word forms: perro and perros count as two words. Choose “headwords” to count them as one.";
  updateGenerate();
}

// ---------------------------------------------------------------------------- the request

function settings() {
  const temperature = Number($("temperature").value || 0);
  const out = {
    mode: mode(),
    model: app.model,
    maxTokens: intValue("max-tokens"),
    temperature,
    beams: intValue("beams") || 1,
    seed: intValue("seed"),
    drafts: intValue("drafts-count") || 1,
    soft: false,
  };
  if (out.mode === "wordlist") {
    out.vocabulary = { vocab_lang: $("lang").value, vocab_n_words: intValue("n-words") };
    out.unit = unit();
    if (out.unit === "lemma") out.vocabulary.vocab_unit = "lemma";
    out.langName = languageName($("lang").value);
  } else {
    out.constraints = composer.constraints();
    out.vocabulary = { constraints: out.constraints };
    const n = composer.vocabNWords();
    if (n != null) out.vocabulary.vocab_n_words = n;
    out.soft = out.constraints.some((c) => c.type === "bound_boost");
  }
  // `drafts` goes out when it changes something: more than one, or a soft preference (which
  // the server would otherwise compare 3 drafts for when sampling).
  out.sendDrafts = out.drafts > 1 || out.soft;
  return out;
}

function request() {
  const s = settings();
  const body = {
    model: s.model,
    messages: [{ role: "user", content: $("prompt").value.trim() }],
    max_tokens: s.maxTokens,
    ...s.vocabulary,
    stream_options: { include_usage: true, include_events: true },
  };
  if (s.sendDrafts) body.drafts = s.drafts;
  if (s.temperature > 0) {
    body.temperature = s.temperature;
    if (s.seed != null) body.seed = s.seed;
  } else {
    body.temperature = 0;
    body.num_beams = s.beams;
  }
  return { ...s, body };
}

function blocker() {
  const st = app.status.state;
  if (app.generating) return { text: "Writing the answer…" };
  if (st === "unreachable") return { text: "The server cannot be reached; the page keeps trying." };
  if (st === "loading" || st === "unknown") return { text: "The server is still loading the model." };
  if (st === "error") return { text: `The server failed to start: ${app.status.detail}` };
  if (app.tokenState === "none") return { text: "Enter the access token first." };
  if (app.tokenState === "refused") return { text: "The access token was refused: enter the right one." };
  if (app.tokenState !== "ok") return { text: "Connecting…" };
  if (!$("prompt").value.trim()) return { text: "Write what the text should be about." };
  const max = intValue("max-tokens");
  if (!max || max < 1) return { text: "Set a maximum length of at least 1 token." };
  const drafts = intValue("drafts-count");
  if (!drafts || drafts < 1 || drafts > MAX_DRAFTS) return { text: `Choose between 1 and ${MAX_DRAFTS} drafts.` };
  const beams = intValue("beams") || 1;
  if (drafts > 1 && beams > 1 && beams < drafts && !(Number($("temperature").value || 0) > 0)) {
    return { text: `With ${beams} beams, at most ${beams} drafts: lower “Drafts”, or set “Beams” to 1 (the other drafts are then sampled).` };
  }
  if (mode() === "wordlist") {
    const entry = currentList();
    const n = intValue("n-words");
    if (!entry) return { text: "Choose a language." };
    const limit = unitLimit(entry);
    if (!n || n < 1 || n > limit) return { text: `Choose between 1 and ${fmt(limit)} ${unitName()}.` };
  } else {
    const state = composer.state();
    if (!composer.constraints().length) return { text: "Add at least one sound constraint." };
    if (state.status === "unsat") return { text: "These constraints cannot all be satisfied: remove or relax the one marked “at fault”." };
    if (state.status === "error") return { text: "The constraints were refused: see the message above." };
  }
  return null;
}

function updateGenerate() {
  const b = blocker();
  const button = $("generate");
  button.disabled = b !== null;
  const reason = $("generate-reason");
  if (b) reason.textContent = b.text;
  else if (app.status.state === "busy") {
    reason.textContent = `The server is busy (${app.status.running} writing, ${app.status.waiting} waiting): `
      + "a new request waits for a free slot, or is turned away while the queue is full.";
  }
  else reason.textContent = "Ready to generate.";
  reason.dataset.blocked = String(b !== null);
}

// ------------------------------------------------------------------------------------ wiring

const status = startStatus(api, $("status"), (s) => {
  app.status = s;
  if ((s.state === "ready" || s.state === "busy") && app.token && app.tokenState === "waiting") connect({ again: true });
  updateGenerate();
});
const composer = createComposer({ api, onChange: updateGenerate });
const runner = createRunner({
  api,
  status,
  request,
  labelOf: (c) => composer.label(c),
  onState: (running) => {
    app.generating = running;
    updateGenerate();
  },
});
const batch = createBatch({ api, settings: () => (app.tokenState === "ok" ? settings() : null) });

function showMode() {
  const sounds = mode() === "sounds";
  $("panel-wordlist").hidden = sounds;
  $("panel-sounds").hidden = !sounds;
  updateGenerate();
}

$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  connect();
});
$("token").addEventListener("change", connect);
$("token-forget").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  $("token").value = "";
  app.model = null;
  connect();
  $("token").focus();
});
for (const id of ["mode-wordlist", "mode-sounds"]) $(id).addEventListener("change", showMode);
$("lang").addEventListener("change", onLanguage);
$("vocab-unit").addEventListener("change", onUnit);
for (const id of ["prompt", "max-tokens", "n-words", "temperature", "beams", "drafts-count"]) $(id).addEventListener("input", updateGenerate);
$("temperature").addEventListener("input", () => {
  const sampling = Number($("temperature").value || 0) > 0;
  $("beams").disabled = sampling;
  $("seed").disabled = !sampling;
});
$("seed").disabled = true;
$("generate").addEventListener("click", () => runner.run());
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !$("generate").disabled) {
    e.preventDefault();
    runner.run();
  }
});

showMode();
if (app.token) {
  $("token").value = app.token;
  app.tokenState = "waiting";
} else {
  connect();
}
