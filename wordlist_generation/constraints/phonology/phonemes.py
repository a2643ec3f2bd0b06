"""The English phoneme inventory in IPA: ARPAbet conversion, request spellings, features.

Why this shape:

* Clinicians and phonologists write sounds in IPA, but CMUdict speaks ARPAbet. We convert once, at
  build time, with our own table (`ARPABET_TO_IPA`), so every later comparison is a plain string
  comparison on IPA symbols. Stress is kept *apart* from the phoneme (a `stress` column) except for
  the two places where English phonology itself splits a symbol by stress: unstressed AH is the
  schwa /ə/ and stressed AH is /ʌ/; unstressed ER is /ɚ/ and stressed ER is /ɝ/.
* Requests may use common ASCII spellings (`r` for /ɹ/, `g` for /ɡ/, `ch` for /tʃ/, tie bars as in
  `t͡ʃ`); `normalize_phoneme` maps them onto the inventory and rejects anything else by name.
* Rhotic vowels: /ɝ/ and /ɚ/ are /ɹ/ realised as a vowel colour. A child who cannot yet produce
  /ɹ/ generally cannot produce them either, so *excluding* /ɹ/ also excludes /ɝ/ and /ɚ/
  (`expand_exclusion`). The rule is one-way: excluding /ɝ/ does not exclude /ɹ/.
* Maximal oppositions need distinctive features: `CONSONANT_FEATURES` gives place, manner, voice
  and the major-class feature [sonorant] of every consonant.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

Position = Literal["initial", "medial", "final", "any"]
POSITIONS: tuple[str, ...] = ("initial", "medial", "final", "any")

#: ARPAbet base symbol (stress digit removed) -> IPA. AH and ER are the stressed forms; their
#: unstressed forms are in `UNSTRESSED_IPA`.
ARPABET_TO_IPA: Mapping[str, str] = MappingProxyType(
    {
        # vowels
        "AA": "ɑ",
        "AE": "æ",
        "AH": "ʌ",
        "AO": "ɔ",
        "AW": "aʊ",
        "AY": "aɪ",
        "EH": "ɛ",
        "ER": "ɝ",
        "EY": "eɪ",
        "IH": "ɪ",
        "IY": "iː",
        "OW": "oʊ",
        "OY": "ɔɪ",
        "UH": "ʊ",
        "UW": "uː",
        # consonants
        "B": "b",
        "CH": "tʃ",
        "D": "d",
        "DH": "ð",
        "F": "f",
        "G": "ɡ",
        "HH": "h",
        "JH": "dʒ",
        "K": "k",
        "L": "l",
        "M": "m",
        "N": "n",
        "NG": "ŋ",
        "P": "p",
        "R": "ɹ",
        "S": "s",
        "SH": "ʃ",
        "T": "t",
        "TH": "θ",
        "V": "v",
        "W": "w",
        "Y": "j",
        "Z": "z",
        "ZH": "ʒ",
    }
)

#: Vowels whose IPA symbol depends on stress: unstressed (0) forms.
UNSTRESSED_IPA: Mapping[str, str] = MappingProxyType({"AH": "ə", "ER": "ɚ"})

VOWELS: frozenset[str] = frozenset(
    [ARPABET_TO_IPA[a] for a in ARPABET_TO_IPA if a[0] in "AEIOU"] + list(UNSTRESSED_IPA.values())
)
CONSONANTS: frozenset[str] = frozenset(v for v in ARPABET_TO_IPA.values() if v not in VOWELS)

#: The phoneme inventory, vowels first then consonants (stable order: it defines the bit layout).
INVENTORY: tuple[str, ...] = tuple(sorted(VOWELS)) + tuple(sorted(CONSONANTS))
_BIT: Mapping[str, int] = MappingProxyType({p: i for i, p in enumerate(INVENTORY)})

#: Excluding the key also excludes the values (see module docstring: rhotic vowels).
EXCLUSION_IMPLIES: Mapping[str, tuple[str, ...]] = MappingProxyType({"ɹ": ("ɝ", "ɚ")})

#: Common ASCII / variant spellings accepted in requests.
PHONEME_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "r": "ɹ",
        "ɻ": "ɹ",
        "g": "ɡ",
        "ch": "tʃ",
        "ʧ": "tʃ",
        "tsh": "tʃ",
        "ʤ": "dʒ",
        "dzh": "dʒ",
        "sh": "ʃ",
        "zh": "ʒ",
        "th": "θ",
        "dh": "ð",
        "ng": "ŋ",
        "y": "j",
        "i": "iː",
        "u": "uː",
        "ɑː": "ɑ",
        "ɔː": "ɔ",
        "ɜ": "ɝ",
        "ɜː": "ɝ",
        "ɜ˞": "ɝ",
        "ɝː": "ɝ",
        "ə˞": "ɚ",
        "ei": "eɪ",
        "e": "eɪ",
        "ai": "aɪ",
        "au": "aʊ",
        "oi": "ɔɪ",
        "ɔi": "ɔɪ",
        "ou": "oʊ",
        "o": "oʊ",
        "əʊ": "oʊ",
    }
)

_TIE_BARS = "\u0361\u035c"
_ARPABET_RE = re.compile(r"^([A-Z]{1,2})([0-2]?)$")


class UnknownPhonemeError(ValueError):
    """A requested phoneme is not in the inventory (message names it and lists the inventory)."""

    def __init__(self, phoneme: str) -> None:
        self.phoneme = phoneme
        aliases = ", ".join(f"{k}→{v}" for k, v in PHONEME_ALIASES.items() if k.isascii())
        super().__init__(
            f"unknown phoneme {phoneme!r}; the English inventory is: {' '.join(INVENTORY)} "
            f"(ASCII spellings accepted: {aliases}; ARPAbet symbols such as SH or AH0 too)"
        )


def normalize_phoneme(symbol: str) -> str:
    """Map a requested phoneme spelling onto the IPA inventory, or raise `UnknownPhonemeError`.

    Tie bars are dropped (`t͡ʃ` is our `tʃ`), an ASCII colon is read as the length mark, then
    the inventory, the alias table and finally ARPAbet (`SH`, `AH0`) are tried in that order.
    """
    if not isinstance(symbol, str):
        raise UnknownPhonemeError(repr(symbol))
    s = unicodedata.normalize("NFC", symbol.strip())
    s = "".join(ch for ch in s if ch not in _TIE_BARS).replace(":", "ː")
    if s in _BIT:
        return s
    if s in PHONEME_ALIASES:
        return PHONEME_ALIASES[s]
    if s.lower() in PHONEME_ALIASES:
        return PHONEME_ALIASES[s.lower()]
    m = _ARPABET_RE.match(s)
    if m and m.group(1) in ARPABET_TO_IPA:
        return arpabet_to_ipa(s)[0]
    raise UnknownPhonemeError(symbol)


def arpabet_to_ipa(symbol: str) -> tuple[str, int]:
    """One ARPAbet symbol -> (IPA, stress); stress is -1 for consonants and unmarked vowels."""
    base = symbol.rstrip("012")
    digit = symbol[len(base) :]
    stress = int(digit) if digit else -1
    if base in UNSTRESSED_IPA and stress == 0:
        return UNSTRESSED_IPA[base], stress
    return ARPABET_TO_IPA[base], stress


def pron_to_ipa(arpabet: Sequence[str]) -> tuple[list[str], list[int]]:
    """A CMUdict pronunciation -> (IPA phonemes, stress per phoneme)."""
    ipa: list[str] = []
    stress: list[int] = []
    for sym in arpabet:
        p, s = arpabet_to_ipa(sym)
        ipa.append(p)
        stress.append(s)
    return ipa, stress


def expand_exclusion(phonemes: Iterable[str]) -> frozenset[str]:
    """The phonemes actually excluded when `phonemes` are excluded (adds /ɝ ɚ/ for /ɹ/)."""
    out: set[str] = set()
    for p in phonemes:
        out.add(p)
        out.update(EXCLUSION_IMPLIES.get(p, ()))
    return frozenset(out)


def phoneme_mask(phonemes: Iterable[str]) -> int:
    """Bit set of inventory phonemes (bit i = INVENTORY[i]); fits in 64 bits."""
    m = 0
    for p in phonemes:
        m |= 1 << _BIT[p]
    return m


def count_syllables(pron: Sequence[str]) -> int:
    """Syllables = vowel nuclei (CMUdict has no syllabic consonants; /ɚ/ counts as a nucleus)."""
    return sum(1 for p in pron if p in VOWELS)


@dataclass(frozen=True)
class ConsonantFeatures:
    """Place, manner and voice of a consonant, plus the major-class feature [sonorant]."""

    place: str
    manner: str
    voiced: bool
    sonorant: bool


def _cf(place: str, manner: str, voiced: bool) -> ConsonantFeatures:
    return ConsonantFeatures(place, manner, voiced, manner in ("nasal", "liquid", "glide"))


CONSONANT_FEATURES: Mapping[str, ConsonantFeatures] = MappingProxyType(
    {
        "p": _cf("bilabial", "stop", False),
        "b": _cf("bilabial", "stop", True),
        "t": _cf("alveolar", "stop", False),
        "d": _cf("alveolar", "stop", True),
        "k": _cf("velar", "stop", False),
        "ɡ": _cf("velar", "stop", True),
        "f": _cf("labiodental", "fricative", False),
        "v": _cf("labiodental", "fricative", True),
        "θ": _cf("dental", "fricative", False),
        "ð": _cf("dental", "fricative", True),
        "s": _cf("alveolar", "fricative", False),
        "z": _cf("alveolar", "fricative", True),
        "ʃ": _cf("postalveolar", "fricative", False),
        "ʒ": _cf("postalveolar", "fricative", True),
        "h": _cf("glottal", "fricative", False),
        "tʃ": _cf("postalveolar", "affricate", False),
        "dʒ": _cf("postalveolar", "affricate", True),
        "m": _cf("bilabial", "nasal", True),
        "n": _cf("alveolar", "nasal", True),
        "ŋ": _cf("velar", "nasal", True),
        "l": _cf("alveolar", "liquid", True),
        "ɹ": _cf("alveolar", "liquid", True),
        "w": _cf("labiovelar", "glide", True),
        "j": _cf("palatal", "glide", True),
    }
)


def feature_difference(a: str, b: str) -> dict[str, int]:
    """How two consonants differ: place/manner/voice (0/1 each), their sum, and sonorant_diff.

    `feature_distance` counts the differing features among place, manner and voice (0-3);
    `sonorant_diff` is 1 when exactly one of the two is [+sonorant] (a major-class difference,
    the defining property of a maximal opposition).
    """
    fa, fb = CONSONANT_FEATURES[a], CONSONANT_FEATURES[b]
    place = int(fa.place != fb.place)
    manner = int(fa.manner != fb.manner)
    voice = int(fa.voiced != fb.voiced)
    return {
        "place": place,
        "manner": manner,
        "voice": voice,
        "feature_distance": place + manner + voice,
        "sonorant_diff": int(fa.sonorant != fb.sonorant),
    }
