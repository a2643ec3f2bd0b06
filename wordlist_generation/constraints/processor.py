"""The logits processor that applies constraints during `model.generate`.

One processor serves greedy decoding, sampling, beam search and batches: each row of the batch is
identified by its generated-token prefix, not by its position. Beams reorder and duplicate every
step, so a row's state is found by its prefix: a known prefix reuses its state, a new one forks
the state of its parent prefix (the prefix minus the last token) and advances it by that token.
States no row refers to any more are dropped after each step.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Collection, Sequence

import numpy as np
import torch
from transformers import LogitsProcessor

from .base import SequenceConstraint
from .bitmask import apply_bitmask, pack_bool

log = logging.getLogger(__name__)

__all__ = ["ConstraintLogitsProcessor", "fill_mask", "set_bits"]


def set_bits(row: torch.Tensor, tokens: Sequence[int], value: bool) -> None:
    """Set (or clear) the bits of `tokens` in the contiguous int32 CPU bitmask `row` (every mask
    here is built on the CPU), through numpy: tensor indexing costs ~20 us an access."""
    words = row.numpy().view(np.uint32)
    for t in tokens:
        word, bit = divmod(t, 32)
        if value:
            words[word] |= np.uint32(1 << bit)
        else:
            words[word] &= np.uint32(0xFFFFFFFF ^ (1 << bit))


def fill_mask(
    state: SequenceConstraint, row: torch.Tensor, eos_token_ids: Sequence[int]
) -> str | None:
    """Fill the int32 bitmask `row` (zeroed) with what `state` allows next, end tokens included
    exactly when the state can end. Returns the reason when the row cannot go on (a dead end or a
    failing backend); the row then allows only the end tokens, so that it finishes."""
    eos = [t for t in eos_token_ids if t < row.shape[0] * 32]
    try:
        if not state.fill_bitmask(row):
            allowed = torch.zeros(row.shape[0] * 32, dtype=torch.bool)
            state.fill_allowed(allowed)
            pack_bool(allowed, row)
        can_end = state.can_end()
    except Exception as exc:  # a backend bug must fail this row only
        log.exception("constraint mask failed")
        row.zero_()
        set_bits(row, eos, True)
        return f"mask failed: {type(exc).__name__}: {exc}"
    set_bits(row, eos, can_end)
    if not can_end and not bool(row.any()):
        set_bits(row, eos, True)
        return "dead end: no token can continue the answer"
    return None


class _Broken:
    """Stands in for the state of a row whose constraint failed: only EOS is allowed after."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


class ConstraintLogitsProcessor(LogitsProcessor):
    """Masks every constrained row to the tokens its constraint allows.

    `input_ids` is `[len(roots) * num_beams, prompt_len + t]` (prompts left-padded to one length);
    row r decodes under `roots[r // num_beams]`, and a None root leaves its rows untouched. A row
    whose generated tokens contain an EOS id has finished (it is padded with EOS afterwards) and
    is left alone. EOS ids are allowed exactly when the row's state `can_end()`.

    A row that reaches a dead end (no token allowed and cannot end) or is handed a token its state
    rejects is not silently ended: the reason goes to `errors[row]` and the log, and that row is
    then allowed only EOS so that it finishes; the engine reports the error.
    """

    def __init__(
        self,
        roots: Sequence[SequenceConstraint | None],
        *,
        prompt_len: int,
        num_beams: int,
        eos_token_ids: Collection[int],
        record_timings: bool = False,
        budgets: Sequence[int] | None = None,
    ) -> None:
        if num_beams < 1:
            raise ValueError("num_beams must be >= 1")
        self.roots = list(roots)
        self.prompt_len = prompt_len
        self.num_beams = num_beams
        self.eos_token_ids = tuple(sorted(set(eos_token_ids)))
        self._eos = frozenset(self.eos_token_ids)
        self.errors: dict[int, str] = {}
        #: The same errors keyed by (root index, generated prefix): what beam search needs.
        self.sequence_errors: dict[tuple[int, tuple[int, ...]], str] = {}
        #: Seconds per constrained row and step (state update + mask), when recording.
        self.timings: list[float] | None = [] if record_timings else None
        #: Seconds per call (every row, including applying the masks), when recording.
        self.call_timings: list[float] | None = [] if record_timings else None
        self._advance_seconds: dict[tuple[int, tuple[int, ...]], float] = {}
        self._states: dict[tuple[int, tuple[int, ...]], SequenceConstraint | _Broken] = {}
        #: max_new_tokens per root: states that steer toward required words near the end of the
        #: budget (`set_remaining_tokens`) are told how many tokens remain before each mask.
        self.budgets = list(budgets) if budgets is not None else None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        t_call = time.perf_counter()
        n_rows = scores.shape[0]
        generated = input_ids[:, self.prompt_len :].tolist()
        keys: list[tuple[int, tuple[int, ...]] | None] = []
        for r in range(n_rows):
            group = r // self.num_beams
            root = self.roots[group] if group < len(self.roots) else None
            prefix = tuple(generated[r])
            if root is None or (self._eos and not self._eos.isdisjoint(prefix)):
                keys.append(None)
            else:
                keys.append((group, prefix))
        states = self._resolve(keys)
        active = [r for r, k in enumerate(keys) if k is not None]
        if not active:
            return scores
        width = (scores.shape[1] + 31) // 32
        bitmask = torch.zeros((len(active), width), dtype=torch.int32)
        timings = self.timings
        biases: list[tuple[int, dict[int, float]]] = []
        for i, r in enumerate(active):
            t0 = time.perf_counter()
            key = keys[r]
            assert key is not None
            state = states[key]
            if self.budgets is not None and not isinstance(state, _Broken):
                state.set_remaining_tokens(self.budgets[key[0]] - len(key[1]))
            self._fill_row(key, r, state, bitmask[i])
            if not isinstance(state, _Broken) and (bias := state.token_bias()):
                biases.append((r, bias))
            if timings is not None:
                advance = self._advance_seconds.pop(key, 0.0)
                timings.append(time.perf_counter() - t0 + advance)
        if len(active) == n_rows:
            apply_bitmask(scores, bitmask)
        else:
            idx = torch.tensor(active, dtype=torch.long)
            sub = scores[idx]
            apply_bitmask(sub, bitmask)
            scores[idx] = sub
        for r, bias in biases:
            for t, boost in bias.items():
                scores[r, t] += boost
        if self.call_timings is not None:
            self.call_timings.append(time.perf_counter() - t_call)
        return scores

    def _resolve(
        self, keys: list[tuple[int, tuple[int, ...]] | None]
    ) -> dict[tuple[int, tuple[int, ...]], SequenceConstraint | _Broken]:
        """The state of every current key, derived from the previous step's states."""
        old = self._states
        new: dict[tuple[int, tuple[int, ...]], SequenceConstraint | _Broken] = {}
        wanted = {k for k in keys if k is not None}
        children = Counter((k[0], k[1][:-1]) for k in wanted if k not in old and k[1])
        # A state object reachable from two keys (a caller reusing one root for several groups)
        # must never be advanced in place.
        shared = Counter(id(s) for s in old.values())
        for key in wanted:
            if key in old:
                new[key] = old[key]
                continue
            group, prefix = key
            if not prefix:
                root = self.roots[group]
                assert root is not None
                new[key] = root
                continue
            parent_key = (group, prefix[:-1])
            parent = old.get(parent_key)
            if parent is None:
                # Not seen last step (the first call came after some tokens): replay from the root.
                parent = self._replay(group, prefix[:-1])
                old[parent_key] = parent
            if isinstance(parent, _Broken):
                new[key] = parent
                continue
            token = prefix[-1]
            # The only child of a prefix no row keeps may take the parent's state over.
            in_place = (
                children[parent_key] == 1 and parent_key not in wanted and shared[id(parent)] == 1
            )
            t0 = time.perf_counter()
            try:
                state = parent if in_place else parent.fork()
                ok = state.advance(token)
            except Exception as exc:  # a backend bug must fail the row, not the whole batch
                log.exception("constraint advance failed")
                ok, state = False, None
                reason = f"token {token}: {type(exc).__name__}: {exc}"
            else:
                reason = f"token {token} is not allowed by the constraint"
            new[key] = state if ok else _Broken(reason)
            if self.timings is not None:
                self._advance_seconds[key] = time.perf_counter() - t0
        self._states = new
        return new

    def _replay(self, group: int, prefix: tuple[int, ...]) -> SequenceConstraint | _Broken:
        root = self.roots[group]
        assert root is not None
        state = root.fork()
        for token in prefix:
            if not state.advance(token):
                return _Broken(f"token {token} is not allowed by the constraint")
        return state

    def _fill_row(
        self,
        key: tuple[int, tuple[int, ...]],
        r: int,
        state: SequenceConstraint | _Broken,
        row: torch.Tensor,
    ) -> None:
        if isinstance(state, _Broken):
            eos = [t for t in self.eos_token_ids if t < row.shape[0] * 32]
            self._error(key, r, state.message)
            set_bits(row, eos, True)
            return
        error = fill_mask(state, row, self.eos_token_ids)
        if error is not None:
            self._error(key, r, error)

    def _error(self, key: tuple[int, tuple[int, ...]], r: int, message: str) -> None:
        self.sequence_errors.setdefault(key, message)
        if r not in self.errors:
            self.errors[r] = message
            log.warning("constraint error on row %d: %s", r, message)

    def error_of(self, group: int, generated: Sequence[int]) -> str | None:
        """The constraint error that ended a finished sequence of `group`, if any.

        Beams reorder every step, so row positions say nothing at the end: a sequence is matched
        by its tokens. A failed state allows only EOS, so a failed sequence is the failing prefix
        followed by EOS (or cut by the token budget right at that prefix).
        """
        tokens = tuple(generated)
        for end in (len(tokens) - 1, len(tokens)):
            if end >= 0:
                message = self.sequence_errors.get((group, tokens[:end]))
                if message is not None:
                    return message
        return None
