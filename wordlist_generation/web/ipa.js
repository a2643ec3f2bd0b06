// The server's phoneme inventory (/v1/phonemes): every accepted spelling of each sound, and an
// IPA keyboard whose keys show a familiar example word.

import { h } from "./text.js";

const MANNERS = ["stop", "fricative", "affricate", "nasal", "liquid", "glide"];

/** Spellings (IPA, ASCII, ARPAbet) -> IPA, what excluding a sound also excludes, the list. */
export function readInventory(body) {
  const spellings = new Map();
  const implies = {};
  for (const p of body.data) {
    spellings.set(p.ipa, p.ipa);
    for (const a of p.ascii) spellings.set(a.toLowerCase(), p.ipa);
    const arpa = p.arpabet.toLowerCase();
    spellings.set(arpa, p.ipa);
    if (!arpa.endsWith("0")) spellings.set(arpa.replace(/\d/, ""), p.ipa); // AH is /ʌ/, as on the server
    if (p.excluding_also_excludes) implies[p.ipa] = p.excluding_also_excludes;
  }
  return { spellings, implies, list: body.data, lexicon: body.lexicon };
}

function example(p) {
  const e = p.examples;
  return [e.initial, e.medial, e.final].filter(Boolean).slice(0, 2).join(", ");
}

/** Consonants (by manner), then vowels; a key calls onKey(ipa). */
export function renderKeyboard(container, inventory, onKey) {
  const vowels = inventory.list.filter((p) => p.kind === "vowel");
  const consonants = inventory.list
    .filter((p) => p.kind === "consonant")
    .sort((a, b) => MANNERS.indexOf(a.features.manner) - MANNERS.indexOf(b.features.manner));
  container.replaceChildren(...[["Consonants", consonants], ["Vowels", vowels]].map(([title, group]) =>
    h("div", { class: "key-group", role: "group", "aria-label": title },
      h("span", { class: "key-group-title", text: title }),
      group.map((p) => h("button", {
        type: "button", class: "ipa-key", "data-ipa": p.ipa,
        "aria-label": `/${p.ipa}/ as in ${example(p) || p.arpabet}`,
        title: `/${p.ipa}/ as in ${example(p)}. Also typed: ${[...p.ascii, p.arpabet].join(", ")}`,
        onclick: () => onKey(p.ipa),
      }, h("span", { class: "ipa-sym", text: p.ipa }),
      h("span", { class: "ipa-ex", text: p.examples.initial || p.examples.medial || p.examples.final || "" }))))));
}
