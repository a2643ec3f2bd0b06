"""The words an answer has written so far, and where they stand in their sentences.

Required words are bookkeeping over the text, not part of the grammar: the grammar only says
which words may appear (`grammar`), and a `WordTracker` fed the bytes of each token says which
have appeared. It is small and cheap to copy (one per decoding sequence and beam), and its cost
per token does not depend on the length of the answer.

A word counts as *inside a sentence* once another word stands before it in its sentence and the
next word starts before the sentence ends. Sentences end at `.`, `!`, `?`, `…` and line breaks.
Words are runs of ASCII letters with inner apostrophes (`don't`), as in the re-check
(`check.answer_words`); no multi-byte UTF-8 character holds an ASCII byte, so bytes are enough.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Bytes that end a sentence: `. ! ?`, a line break, and the last byte of `…` (E2 80 A6).
SENTENCE_END = frozenset(b".!?\n\xa6")
#: Punctuation after which a sentence goes on (a word may follow it directly after a space).
PAUSE = frozenset(b",;:")
#: Words after which a planned word rarely fits ("the so", "my told"): most planned words are not
#: nouns, and the model's own noun is a better next word.
DETERMINERS = frozenset({"a", "an", "the", "my", "your", "his", "her", "its", "our", "their"})
_LETTERS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_APOSTROPHE = ord("'")


def is_letter(byte: int) -> bool:
    return byte in _LETTERS


@dataclass
class WordTracker:
    """Incremental word and sentence bookkeeping over the bytes of an answer."""

    #: Every completed word (lowercase).
    seen: set[str] = field(default_factory=set)
    #: Completed words that had a word before and after them in the same sentence.
    inside: set[str] = field(default_factory=set)
    #: The word being written (its letters so far).
    word: str = ""
    #: Words completed in the current sentence.
    sentence_words: int = 0
    #: The last completed word when it had a word before it and its sentence has not ended.
    waiting: str | None = None
    #: Words started so far (a new word after a separator increments it).
    started: int = 0
    #: The last byte written (-1 before the first).
    last: int = -1
    #: The last completed word.
    last_word: str = ""

    def copy(self) -> WordTracker:
        return WordTracker(
            set(self.seen),
            set(self.inside),
            self.word,
            self.sentence_words,
            self.waiting,
            self.started,
            self.last,
            self.last_word,
        )

    def feed(self, data: bytes) -> None:
        for byte in data:
            if byte in _LETTERS or (byte == _APOSTROPHE and self.word):
                if not self.word:
                    self._start_word()
                self.word += chr(byte)
            else:
                if self.word:
                    self._end_word()
                if byte in SENTENCE_END:
                    self.sentence_words = 0
                    self.waiting = None
            self.last = byte

    def _start_word(self) -> None:
        self.started += 1
        if self.waiting is not None:
            self.inside.add(self.waiting)
            self.waiting = None

    def _end_word(self) -> None:
        word = self.word.lower()
        self.seen.add(word)
        self.last_word = word
        self.waiting = word if self.sentence_words else None
        self.sentence_words += 1
        self.word = ""

    def written(self) -> set[str]:
        """Completed words plus the one being written (it is complete if the answer ends here)."""
        if not self.word:
            return self.seen
        return self.seen | {self.word.lower()}

    @property
    def glued(self) -> bool:
        """True when the next word needs a separator first (the text ends with a word)."""
        return self.last >= 0 and (is_letter(self.last) or self.last == _APOSTROPHE)

    def after_determiner(self) -> bool:
        """Does the text end with a determiner ("a", "the", "my"...), and at most a space?"""
        if self.word:
            return self.word.lower() in DETERMINERS
        return self.last == ord(" ") and self.last_word in DETERMINERS

    def mid_sentence(self) -> bool:
        """Is the text at a point where a word may come with another word before it in its
        sentence: right after a word, after `,` `;` `:`, or after a space that follows one?"""
        if self.sentence_words == 0 and not self.word:
            return False
        return self.glued or self.last in PAUSE or self.last == ord(" ")


def goes_on(token: bytes) -> bool:
    """Does `token`, written right after a word, keep that word's sentence going?

    It must start with a separator (a letter would lengthen the word) and reach its next word,
    if any, without ending the sentence.
    """
    if not token or is_letter(token[0]) or token[0] == _APOSTROPHE:
        return False
    for byte in token:
        if byte in _LETTERS:
            return True
        if byte in SENTENCE_END:
            return False
    return True
