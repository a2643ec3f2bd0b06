"""Phonological constraints: validate, solve against the lexicon, compile to a grammar, re-check.

The pipeline, one module per step:

1. `types`: validate the request into frozen, hashable constraint models (`parse_constraints`).
2. `solve`: a small constraint-satisfaction problem over the `lexicon` (`phonemes` holds the IPA
   inventory): the allowed vocabulary and the required slots, or the constraint that emptied a
   domain.
3. `grammar`: a llguidance Lark grammar whose 64-bit rule parameter tracks the required words.
4. `constraint` (+ `steering`): the engine's `CompiledConstraint`, with budget steering.
5. `check`: the independent re-check of an answer, straight from CMUdict.

`service.PhonologyHandler` is the compile handler registered with `ConstraintCompiler`. Nothing
here imports a web framework: errors are typed exceptions the HTTP layer maps.
"""

from .check import Verdict, answer_words, check_text, soft_score
from .constraint import PhonologicalConstraint, PhonologicalSequence, parser_limits
from .errors import (
    BudgetTooSmall,
    GrammarTooLarge,
    PhonologyError,
    UnsatisfiableConstraint,
    UnsupportedBackend,
    require_llguidance,
)
from .grammar import GrammarPlan, compile_grammar, words_regex
from .lexicon import Lexicon
from .phonemes import UnknownPhonemeError, expand_exclusion, normalize_phoneme
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
from .types import Constraint, inventory_description, parse_constraints

__all__ = [
    "DEFAULT_TOP_K",
    "GRAMMAR_VERSION",
    "BudgetTooSmall",
    "Candidate",
    "Constraint",
    "GrammarPlan",
    "GrammarTooLarge",
    "Lexicon",
    "PhonologicalConstraint",
    "PhonologicalSequence",
    "PhonologyError",
    "PhonologyHandler",
    "RequiredSlot",
    "Solution",
    "UnknownPhonemeError",
    "UnsatisfiableConstraint",
    "UnsupportedBackend",
    "Verdict",
    "answer_words",
    "cache_key",
    "check_text",
    "compile_grammar",
    "expand_exclusion",
    "inventory_description",
    "normalize_phoneme",
    "parse_constraints",
    "parser_limits",
    "preview",
    "require_llguidance",
    "soft_score",
    "solve",
    "words_regex",
]
