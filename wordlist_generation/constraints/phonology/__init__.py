"""Phonological constraints: validate, solve against the lexicon, compile to a grammar, re-check.

The pipeline, one module per step:

1. `types`: validate the request into frozen, hashable constraint models (`parse_constraints`).
2. `solve`: a small constraint-satisfaction problem over the `lexicon` (`phonemes` holds the IPA
   inventory): the allowed vocabulary and the required slots, or the constraint that emptied a
   domain.
3. `grammar`: a llguidance Lark grammar of the allowed vocabulary.
4. `requirements` + `tracking`: the required words, checked over the words written so far.
5. `constraint` (+ `steering`): the engine's `CompiledConstraint`: ends only once the required
   words are written, places the planned words inside sentences, fits them in the budget.
6. `check`: the independent re-check of an answer, straight from CMUdict.

`service.PhonologyHandler` is the compile handler registered with `ConstraintCompiler`. Nothing
here imports a web framework: errors are typed exceptions the HTTP layer maps.
"""

from .check import Verdict, answer_words, check_text, soft_score
from .constraint import PhonologicalConstraint, PhonologicalSequence, parser_limits
from .errors import (
    BudgetTooSmall,
    PhonologyError,
    UnsatisfiableConstraint,
    UnsupportedBackend,
    require_llguidance,
)
from .grammar import lark_grammar, words_regex
from .lexicon import Lexicon
from .phonemes import UnknownPhonemeError, expand_exclusion, normalize_phoneme
from .requirements import Need, Requirements
from .service import PhonologyHandler
from .solve import (
    DEFAULT_TOP_K,
    GRAMMAR_VERSION,
    Candidate,
    RequiredSlot,
    Solution,
    cache_key,
    preview,
    solve,
)
from .tracking import WordTracker
from .types import Constraint, inventory_description, parse_constraints

__all__ = [
    "DEFAULT_TOP_K",
    "GRAMMAR_VERSION",
    "BudgetTooSmall",
    "Candidate",
    "Constraint",
    "Lexicon",
    "Need",
    "PhonologicalConstraint",
    "PhonologicalSequence",
    "PhonologyError",
    "PhonologyHandler",
    "Requirements",
    "RequiredSlot",
    "Solution",
    "UnknownPhonemeError",
    "UnsatisfiableConstraint",
    "UnsupportedBackend",
    "Verdict",
    "WordTracker",
    "answer_words",
    "cache_key",
    "check_text",
    "expand_exclusion",
    "inventory_description",
    "lark_grammar",
    "normalize_phoneme",
    "parse_constraints",
    "parser_limits",
    "preview",
    "require_llguidance",
    "soft_score",
    "solve",
    "words_regex",
]
