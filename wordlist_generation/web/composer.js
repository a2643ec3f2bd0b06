// The sound-constraint composer: one form per constraint type, the IPA keyboard (ipa.js),
// removable chips, and a live preview (survival, domains, candidates) from the server.

import { ApiError, describeError } from "./api.js";
import { readInventory, renderKeyboard } from "./ipa.js";
import { $, debounce, fmt, h, pct } from "./text.js";

const POSITIONS = [
  ["any", "anywhere in the word"],
  ["initial", "at the start"],
  ["medial", "in the middle"],
  ["final", "at the end"],
];
const NORMS = [
  ["syllables", "syllables"],
  ["phonemes", "sounds (phonemes)"],
  ["letters", "letters"],
  ["zipf", "frequency (Zipf scale: 3 rare, 5 common, 7 very common)"],
];
const FIELDS = {
  phonemes: { label: "Sounds (one or more)", kind: "sounds", multi: true },
  targets: { label: "Target sounds (two or more)", kind: "sounds", multi: true },
  phoneme1: { label: "First sound", kind: "sounds" },
  phoneme2: { label: "Second sound", kind: "sounds" },
  substitute: { label: "Substitute sound (the one used instead)", kind: "sounds" },
  position: { label: "Position in the word", kind: "position" },
  min_count: { label: "At least this many words", kind: "int", value: "1", min: 1, max: 16 },
  n_targets: { label: "How many targets (optional)", kind: "int", min: 1, max: 8, optional: true },
  norm: { label: "Measure", kind: "norm" },
  min_value: { label: "At least", kind: "number", optional: true },
  max_value: { label: "At most", kind: "number", optional: true },
  weight: { label: "Weight", kind: "number", value: "1", min: 0.1, max: 100 },
};
export const TYPES = {
  exclude: {
    name: "Avoid sounds (exclude)",
    fields: ["phonemes"],
    help: "No word of the answer contains these sounds, in any pronunciation.",
  },
  include: {
    name: "Include sounds (include)",
    fields: ["phonemes", "position", "min_count"],
    help: "At least this many different words have one of these sounds at the position.",
  },
  bound: {
    name: "Limit every word (bound)",
    fields: ["norm", "min_value", "max_value"],
    help: "Every word stays within the range: syllables, sounds, letters or frequency.",
  },
  bound_boost: {
    name: "Prefer words, softly (bound_boost)",
    fields: ["norm", "min_value", "max_value", "weight"],
    help: "Prefer words within the range: of several drafts, the one that fits best is kept, so set “Drafts” (below) to 3 or more.",
  },
  contrastive_minpair: {
    name: "Minimal pair (contrastive_minpair)",
    fields: ["phoneme1", "phoneme2", "position"],
    help: "Two words that differ only in these two sounds, such as tea / key.",
  },
  contrastive_maxopp: {
    name: "Maximal opposition (contrastive_maxopp)",
    fields: ["phoneme1", "phoneme2", "position"],
    help: "A minimal pair of two consonants that differ in many features, one of them a sonorant (m / s).",
  },
  contrastive_multopp: {
    name: "Multiple opposition (contrastive_multopp)",
    fields: ["substitute", "targets", "n_targets", "position"],
    help: "A minimal set: one word with the substitute sound and one word for each target sound.",
  },
};
const WHERE = { any: "", initial: " at the start", medial: " in the middle", final: " at the end" };

/** A constraint in plain words, for chips and messages (sounds shown in IPA once the
 *  inventory is known, however they were typed). */
export function describeConstraint(raw, inventory) {
  const ipa = (p) => (inventory && (inventory.spellings.get(p) || inventory.spellings.get(p.toLowerCase()))) || p;
  const c = { ...raw };
  for (const key of ["phonemes", "targets"]) if (c[key]) c[key] = c[key].map(ipa);
  for (const key of ["phoneme1", "phoneme2", "substitute"]) if (c[key]) c[key] = ipa(c[key]);
  const slash = (list) => `/${list.join(" ")}/`;
  const where = WHERE[c.position || "any"] || "";
  const range = () => {
    const plural = c.norm === "phonemes" ? "sounds" : c.norm;
    const unit = (n) => (n === 1 ? plural.slice(0, -1) : plural);
    let text;
    if (c.min_value != null && c.max_value != null) text = `${c.min_value} to ${c.max_value}`;
    else if (c.max_value != null) text = `at most ${c.max_value}`;
    else text = `at least ${c.min_value}`;
    if (c.norm === "zipf") return `frequency ${text} (Zipf)`;
    return `${text} ${unit(c.max_value ?? c.min_value)}`;
  };
  switch (c.type) {
    case "exclude": {
      const also = c.phonemes.flatMap((p) => (inventory && inventory.implies[p]) || []);
      return `No ${slash(c.phonemes)}` + (also.length ? ` (nor ${slash(also)})` : "");
    }
    case "include":
      return `At least ${c.min_count || 1} word${(c.min_count || 1) > 1 ? "s" : ""} with ${slash(c.phonemes)}${where}`;
    case "bound":
      return `Every word: ${range()}`;
    case "bound_boost":
      return `Prefer words with ${range()} (soft)`;
    case "contrastive_minpair":
      return `Minimal pair /${c.phoneme1}/ – /${c.phoneme2}/${where}`;
    case "contrastive_maxopp":
      return `Maximal opposition /${c.phoneme1}/ – /${c.phoneme2}/${where}`;
    case "contrastive_multopp":
      return `Multiple opposition /${c.substitute}/ vs ${slash(c.targets)}${where}`;
    default:
      return c.type;
  }
}

export function createComposer({ api, onChange }) {
  const constraints = [];
  let inventory = null;
  let lastSoundInput = null;
  let state = { status: "empty" };
  let seq = 0;
  let whatifSeq = 0;

  const typeSelect = $("constraint-type");
  const fieldsBox = $("constraint-fields");
  const whatif = $("whatif");
  const nWords = $("sound-n-words");

  for (const [value, t] of Object.entries(TYPES)) typeSelect.append(h("option", { value, text: t.name }));

  function normalizeSound(token) {
    if (!inventory) return token;
    const key = token.normalize("NFC").replace(/[\u0361\u035c]/g, "").replace(":", "ː");
    return inventory.spellings.get(key) || inventory.spellings.get(key.toLowerCase()) || token;
  }

  function soundsOf(input) {
    return input.value.split(/[\s,/]+/).filter(Boolean).map(normalizeSound);
  }

  function renderFields() {
    const type = TYPES[typeSelect.value];
    $("type-help").textContent = type.help;
    fieldsBox.replaceChildren();
    lastSoundInput = null;
    for (const name of type.fields) {
      const def = FIELDS[name];
      const id = `cf-${name}`;
      let control;
      if (def.kind === "sounds") {
        control = h("input", {
          id, type: "text", "data-testid": "phoneme", "data-field": name, autocomplete: "off",
          spellcheck: "false", placeholder: def.multi ? "e.g. r l" : "e.g. t", class: "sound-input",
        });
        control.addEventListener("focus", () => { lastSoundInput = control; });
        lastSoundInput = lastSoundInput || control;
      } else if (def.kind === "position" || def.kind === "norm") {
        const options = def.kind === "position" ? POSITIONS : NORMS;
        control = h("select", { id, "data-field": name, "data-testid": def.kind === "position" ? "position" : null },
          options.map(([value, text]) => h("option", { value, text })));
      } else {
        control = h("input", {
          id, type: "number", "data-field": name, value: def.value ?? null, min: def.min ?? null,
          max: def.max ?? null, step: def.kind === "int" ? "1" : "any", inputmode: "decimal",
          placeholder: def.optional ? "—" : null,
        });
      }
      control.addEventListener("input", scheduleWhatif);
      control.addEventListener("change", scheduleWhatif);
      fieldsBox.append(h("div", { class: "field" }, h("label", { for: id, text: def.label }), control));
    }
    whatif.textContent = "";
  }

  /** The constraint being composed, or {missing: label} when a required field is empty. */
  function candidate() {
    const type = typeSelect.value;
    const c = { type };
    for (const el of fieldsBox.querySelectorAll("[data-field]")) {
      const name = el.dataset.field;
      const def = FIELDS[name];
      if (def.kind === "sounds") {
        const sounds = soundsOf(el);
        if (!sounds.length) return { missing: def.label };
        c[name] = def.multi ? sounds : sounds[0];
      } else if (def.kind === "position" || def.kind === "norm") {
        c[name] = el.value;
      } else if (el.value.trim() !== "") {
        c[name] = Number(el.value);
      } else if (!def.optional) {
        return { missing: def.label };
      }
    }
    if ((type === "bound" || type === "bound_boost") && c.min_value == null && c.max_value == null) {
      return { missing: "At least or At most" };
    }
    return { constraint: c };
  }

  function body(list) {
    const out = { constraints: list, top_k: 5 };
    const n = nWords.value.trim();
    if (n !== "") out.vocab_n_words = Number(n);
    return out;
  }

  async function previewOf(list) {
    return api.json("v1/constraints/preview", { method: "POST", body: body(list) });
  }

  // ------------------------------------------------------------------ the composed list's preview

  function setState(next) {
    state = next;
    renderPreview();
    onChange();
  }

  async function refreshPreview() {
    const mine = ++seq;
    if (!constraints.length) {
      setState({ status: "empty" });
      return;
    }
    setState({ ...state, status: "pending" });
    try {
      const data = await previewOf(constraints);
      if (mine !== seq) return;
      setState({ status: data.satisfiable ? "ok" : "unsat", data });
    } catch (err) {
      if (mine !== seq) return;
      setState({ status: "error", error: err });
    }
  }
  const schedulePreview = debounce(refreshPreview, 300);
  nWords.addEventListener("input", schedulePreview);

  function renderChips() {
    const fault = state.status === "unsat" ? state.data.unsatisfiable.constraint_index : null;
    $("chips").replaceChildren(
      ...constraints.map((c, i) => {
        const label = describeConstraint(c, inventory);
        return h("li", { class: "chip-item", "data-testid": "constraint-chip", "data-fault": fault === i ? "true" : null },
          h("span", { class: "chip-label", text: label }),
          fault === i ? h("span", { class: "fault-tag", text: "at fault" }) : null,
          h("button", {
            type: "button", class: "chip-remove", "aria-label": `Remove constraint: ${label}`, text: "×",
            onclick: () => {
              constraints.splice(i, 1);
              renderChips();
              refreshPreview();
              typeSelect.focus();
            },
          }));
      }),
    );
    if (!constraints.length) $("chips").append(h("li", { class: "muted", text: "None yet: add one below." }));
  }

  function renderPreview() {
    renderChips();
    const survival = $("survival");
    const detail = $("survival-detail");
    const banner = $("survival-banner");
    const unsat = $("unsat");
    const domains = $("domains");
    const bar = $("survival-bar");
    banner.hidden = true;
    unsat.hidden = true;
    domains.replaceChildren();
    $("preview").dataset.state = state.status;
    if (state.status === "empty") {
      survival.textContent = "100 %";
      detail.textContent = "no constraint yet";
      bar.style.width = "100%";
      bar.dataset.level = "ok";
      return;
    }
    if (state.status === "pending" && !state.data) {
      detail.textContent = "computing…";
      return;
    }
    if (state.status === "error") {
      detail.textContent = "";
      unsat.hidden = false;
      unsat.textContent = describeError(state.error);
      return;
    }
    const data = state.data;
    const vocab = data.vocabulary || {};
    if (vocab.survival != null) {
      survival.textContent = pct(vocab.survival);
      detail.textContent = `${fmt(vocab.allowed)} of ${fmt(vocab.base)} words`;
      bar.style.width = `${Math.max(0.5, Math.min(100, vocab.survival * 100))}%`;
      bar.dataset.level = vocab.survival < 0.05 ? "strong" : vocab.survival < 0.2 ? "warning" : "ok";
    }
    const warning = vocab.warning;
    if (warning) {
      banner.hidden = false;
      banner.className = `banner ${warning.level === "strong" ? "danger" : "warn"}`;
      banner.replaceChildren(
        h("strong", {
          text: warning.level === "strong"
            ? "Below 5 %: output may be incoherent, consider relaxing one constraint."
            : "Below 20 %: output will be shorter than usual.",
        }),
        h("span", { text: ` Server: ${warning.message}.` }),
      );
    }
    if (state.status === "unsat") {
      const u = data.unsatisfiable;
      const at = u.constraint_index != null ? constraints[u.constraint_index] : null;
      unsat.hidden = false;
      unsat.replaceChildren(
        h("strong", { text: "These constraints cannot all be satisfied; nothing will be generated." }),
        h("p", { text: at ? `At fault: “${describeConstraint(at, inventory)}”. Remove or relax it.` : "" }),
        h("p", { class: "server-msg", "data-testid": "unsat-message", text: `Server (422): ${u.message}` }),
      );
    }
    domains.append(...domainLines(data));
  }

  function sizeName(key, c) {
    if (key === "phoneme1_words") return `words with /${c.phoneme1}/`;
    if (key === "phoneme2_words") return `words with /${c.phoneme2}/`;
    if (key === "target_words") return "target words";
    const m = /^\/(.+)\/_words$/.exec(key);
    return m ? `words with /${m[1]}/` : key;
  }

  function domainLines(data) {
    const lines = [];
    for (const stage of data.stages || []) {
      if (stage.constraint_index == null) continue;
      const c = constraints[stage.constraint_index];
      if (c) lines.push(h("li", {}, `${describeConstraint(c, inventory)}: `, h("strong", { text: fmt(stage.size) }), " words left"));
    }
    for (const slot of data.required || []) {
      const c = constraints[slot.constraint_index];
      const label = c ? describeConstraint(c, inventory) : slot.label;
      const sizes = Object.entries(slot.domain_sizes || {})
        .map(([key, n]) => `${sizeName(key, c || {})}: ${fmt(n)}`)
        .join(" · ");
      if (slot.type === "include") {
        lines.push(h("li", {}, `${label}: `, h("strong", { text: fmt(slot.n_solutions) }),
          ` words to choose from, e.g. ${(slot.examples || []).slice(0, 5).join(", ")}`));
      } else {
        const cands = (slot.candidates || []).map((cand) => cand.words.join(" / "));
        lines.push(h("li", {}, `${label}: `, h("strong", { text: fmt(slot.n_solutions) }),
          ` ${slot.type === "contrastive_multopp" ? "sets" : "pairs"}; the answer will use one of `,
          h("strong", { class: "candidate", text: cands[0] || "—" }),
          cands.length > 1 ? `, ${cands.slice(1).join(", ")}` : ""));
      }
      if (sizes && slot.type !== "include") lines.push(h("li", { class: "sizes muted" }, `Domain sizes: ${sizes}`));
    }
    if (data.required_words && data.required_words.length) {
      lines.push(h("li", {}, "Suggested to the model: ", h("strong", { "data-testid": "required-words", text: data.required_words.join(", ") })));
    }
    return lines.length ? [h("ul", { class: "domain-list" }, lines)] : [];
  }

  // --------------------------------------------------------------- what adding one would change

  async function runWhatif() {
    const mine = ++whatifSeq;
    const cand = candidate();
    if (!cand.constraint) {
      whatif.textContent = "";
      whatif.dataset.state = "";
      return;
    }
    try {
      const data = await previewOf([...constraints, cand.constraint]);
      if (mine !== whatifSeq) return;
      whatif.dataset.state = data.satisfiable ? "ok" : "unsat";
      whatif.textContent = data.satisfiable
        ? `With this one added, ${pct(data.vocabulary.survival)} of the vocabulary is kept.`
        : `Adding this one makes the request impossible: ${data.unsatisfiable.message}`;
    } catch (err) {
      if (mine !== whatifSeq) return;
      whatif.dataset.state = "error";
      whatif.textContent = err instanceof ApiError && err.status === 400 ? `Not valid yet: ${err.message}` : describeError(err);
    }
  }
  const scheduleWhatif = debounce(runWhatif, 350);

  async function add() {
    const cand = candidate();
    if (!cand.constraint) {
      whatif.dataset.state = "error";
      whatif.textContent = `Fill in “${cand.missing}” first.`;
      return;
    }
    whatifSeq++;
    const mine = ++seq;
    try {
      const data = await previewOf([...constraints, cand.constraint]);
      constraints.push(cand.constraint);
      whatif.textContent = `Added: ${describeConstraint(cand.constraint, inventory)}.` +
        (data.satisfiable ? "" : " The constraints now cannot all be satisfied: see below.");
      whatif.dataset.state = data.satisfiable ? "ok" : "unsat";
      for (const el of fieldsBox.querySelectorAll(".sound-input")) el.value = "";
      if (mine === seq) setState({ status: data.satisfiable ? "ok" : "unsat", data });
    } catch (err) {
      whatif.dataset.state = "error";
      whatif.textContent = err instanceof ApiError && err.status === 400 ? `Not added: ${err.message}` : describeError(err);
    }
  }

  function typeSound(ipa) {
    const target = lastSoundInput || fieldsBox.querySelector(".sound-input");
    if (!target) return;
    const multi = FIELDS[target.dataset.field].multi;
    target.value = multi && target.value.trim() ? `${target.value.trim()} ${ipa}` : ipa;
    target.dispatchEvent(new Event("input"));
  }

  typeSelect.addEventListener("change", renderFields);
  $("add-constraint").addEventListener("click", add);
  renderFields();
  renderPreview();

  return {
    setInventory(body) {
      inventory = readInventory(body);
      renderKeyboard($("ipa-keys"), inventory, typeSound);
      nWords.max = String(body.lexicon.n_words);
      renderPreview();
    },
    hasInventory: () => inventory !== null,
    constraints: () => constraints.map((c) => ({ ...c })),
    vocabNWords: () => (nWords.value.trim() === "" ? null : Number(nWords.value)),
    state: () => state,
    label: (c) => describeConstraint(c, inventory),
    refresh: refreshPreview,
  };
}
