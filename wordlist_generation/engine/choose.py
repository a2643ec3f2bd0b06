"""The next token of every running row of a decoding step, from the step's logits at once.

Each row keeps its own rules (`engine.rows`, `engine.sampling`, its constraint), applied in this
order: penalties, the constraint's mask, the constraint's token bias, then the pick (the argmax,
or a draw from the row's own generator) and the row's text rules (stops, limits, streaming). What
is the same arithmetic for every row runs once over the whole batch: the constraint masks (one
bitmask of all constrained rows, applied in one add), the greedy argmax and, for rows that report
log-probabilities (`SamplingParams.scores`, which drafts set, or `logprobs`), the
log-normalizers. Per row, one row at a time, a 16-row step spent ~7 ms unconstrained and ~19 ms
constrained in this bookkeeping on 2 cores with the embedded model (a third of a decoding step);
the arithmetic is identical either way, so every row still picks the token it picks alone.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

import torch

from ..constraints.bitmask import apply_bitmask
from ..constraints.processor import fill_mask
from .logprobs import decoded_logprobs, token_entry
from .rows import RowState
from .sampling import apply_penalties, argmax_rows, needs_penalties, pick_token


class Choosing(Protocol):
    """What the chooser reads and updates of a running row."""

    row: RowState
    prompt_len: int
    constraint: Any  # SequenceConstraint | None
    ids: list[int]  # prompt + generated tokens (penalties look at both)
    last: int  # the token to feed at the next step


class TokenChooser:
    """Picks the next token of many rows from their logits (`choose`)."""

    def __init__(
        self, decode: Callable[[Sequence[int]], str], eos_token_ids: Collection[int]
    ) -> None:
        self.decode = decode
        self.eos_token_ids = frozenset(eos_token_ids)
        self.eos = min(eos_token_ids)
        self._sorted_eos = sorted(eos_token_ids)

    def choose(self, seqs: Sequence[Choosing], logits: torch.Tensor) -> None:
        """Advance each row of `seqs` by the token its rules pick from its row of `logits`
        ([rows, vocabulary] float32 on the CPU or the model's device; changed in place)."""
        live: list[int] = []
        for i, seq in enumerate(seqs):
            if seq.row.job.cancel.is_set():
                seq.row.finish("cancelled")
            else:
                live.append(i)
        if not live:
            return
        scores = logits if len(live) == len(seqs) else logits[live]
        rows = [seqs[i] for i in live]
        # Log-probabilities only for rows that report them (scores for drafts, logprobs): each
        # normalizer is a pass over the whole vocabulary.
        scored = [s.row.job.params.scores or s.row.job.params.logprobs is not None for s in rows]
        raw_norms: list[float] = []
        if any(scored):  # the model's own distribution (`raw_score`), before any rule acts
            raw_norms = torch.logsumexp(scores, dim=-1).tolist()
        raw_rows: dict[int, torch.Tensor] = {}  # scored rows whose chosen score may change
        constrained, failed, changed = self._constrain(rows, scores, scored, raw_rows)
        norms = raw_norms
        if raw_norms and changed:
            norms = torch.logsumexp(scores, dim=-1).tolist()
        greedy = argmax_rows(scores)
        for j, seq in enumerate(rows):
            if j in failed:
                continue
            row, params = seq.row, seq.row.job.params
            token = greedy[j] if not params.do_sample or row.generator is None else None
            if token is None:
                token = pick_token(scores[j], params, row.generator)
            if scored[j]:
                self._record(row, params, scores[j], token, norms[j], raw_norms[j], raw_rows.get(j))
            row.push(token, self.decode, self.eos_token_ids)
            seq.ids.append(token)
            seq.last = token
            if not row.done and seq.constraint is not None and not seq.constraint.advance(token):
                row.error = f"token {token} is not allowed by the constraint"
                row.finish("error")

    @staticmethod
    def _record(
        row: RowState,
        params: Any,
        scores: torch.Tensor,
        token: int,
        norm: float,
        raw_norm: float,
        raw: torch.Tensor | None,
    ) -> None:
        """The chosen token's log-probabilities, as decoded (`scores`, normalized by `norm`) and
        under the model alone (`raw_norm`; `raw`, the row's scores before penalties and biases,
        where those acted)."""
        score = float(scores[token])
        decoded = score - norm
        # A mask adds exactly 0 to the tokens it allows, so only penalties and biases move the
        # chosen token's score away from the model's own.
        raw_lp = (float(raw[token]) if raw is not None else score) - raw_norm
        row.add_logprobs(decoded, raw_lp)
        if params.logprobs is not None:  # the whole distribution only when it is reported
            logp = decoded_logprobs(scores, params, params.samples(row.choice))
            row.record(token_entry(logp, token, raw_lp, params.logprobs))

    def _constrain(
        self,
        rows: Sequence[Choosing],
        scores: torch.Tensor,
        scored: Sequence[bool],
        raw_rows: dict[int, torch.Tensor],
    ) -> tuple[list[int], set[int], bool]:
        """Penalties, masks and biases, in place on `scores` (a scored row's scores are copied to
        `raw_rows` first where penalties or biases act); returns the constrained rows, the rows
        whose constraint failed (they have ended with an error) and whether any score changed."""
        constrained: list[int] = []
        failed: set[int] = set()
        penalised = False
        bits: torch.Tensor | None = None
        for j, seq in enumerate(rows):
            params = seq.row.job.params
            if needs_penalties([params]):
                if scored[j]:
                    raw_rows[j] = scores[j].clone()
                ids = torch.tensor(seq.ids, dtype=torch.long, device=scores.device)
                apply_penalties(scores[j], ids, seq.prompt_len, params)
                penalised = True
            if seq.constraint is None:
                continue
            if bits is None:
                bits = torch.zeros((len(rows), (scores.shape[1] + 31) // 32), dtype=torch.int32)
            seq.constraint.set_remaining_tokens(params.max_new_tokens - len(seq.row.tokens))
            error = fill_mask(seq.constraint, bits[j], self._sorted_eos)
            if error is not None:
                seq.row.push(self.eos, self.decode, self.eos_token_ids, error=error)
                failed.add(j)
            else:
                constrained.append(j)
        if not constrained:
            return constrained, failed, penalised
        assert bits is not None
        if len(constrained) == len(rows):
            apply_bitmask(scores, bits)
        else:
            index = torch.tensor(constrained, dtype=torch.long)
            part = scores[index.to(scores.device)]
            apply_bitmask(part, bits[index])
            scores[index.to(scores.device)] = part
        for j in constrained:
            bias = rows[j].constraint.token_bias()
            if bias and scored[j] and j not in raw_rows:
                raw_rows[j] = scores[j].clone()
            for t, boost in bias.items():
                scores[j, t] += boost
        return constrained, failed, True
