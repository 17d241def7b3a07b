"""A GRPO-style policy optimiser over synonymous codons, for all proteins of a design run at once.

Policy. Every position of a protein has logits over the synonymous codons of its amino acid (a masked
[L, 6] table; 6 is the largest synonym family), written as

    z[i, k] = z0[i, k] + theta[codon(i, k)] + delta[i, k]

z0 is the log of the host's codon frequency (the initial policy is the host's own usage), theta is one
trainable logit per codon shared by all positions of the protein, and delta a trainable per-position offset.
Why both: the surrogate mostly reads whole-CDS composition (codon frequencies, CAI, GC), which theta learns
from the G x L codon choices of every step at once, while delta can still fix what is local (5' GC, the
context of a forbidden site); a per-position table alone would learn from only G samples per parameter.

Optimiser (GRPO). Each step samples a group of G CDS per protein, scores all of them in one call, turns
rewards into group-relative advantages (r - mean) / (std + eps), and takes a few Adam ascent steps on the
PPO clipped objective with per-codon (token-level) ratios against the sampling policy (a whole-sequence ratio
is a product over hundreds of codons and saturates any clip at once), minus beta * KL(pi || pi_initial) per
position.

Infeasible samples. An infeasible CDS gets the group's worst feasible reward (worst of all when none is
feasible) minus a margin per graded violation (forbidden sites + long homopolymers + GC points outside the
window): always finite, and fewer violations still earn more. Samples are first repaired on policy: codons
covering a violation are redrawn from the policy a few times, so they remain policy samples and the ratios
stay meaningful.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from codon_assets.core.design_constraints import CompiledConstraints, scan_batch
from codon_assets.core.design_settings import OptimiserSettings
from codon_assets.core.genetic_code import CODONS, SYNONYMS, codon_index

MAX_SYN = max(len(v) for v in SYNONYMS.values())  # 6 (Leu, Ser, Arg)
CODON_BYTES = np.frombuffer("".join(CODONS).encode(), dtype=np.uint8).reshape(64, 3)
_NEG = -1e30  # logit of a non-synonymous slot: exp() gives exactly 0, arithmetic stays finite


@dataclass(frozen=True)
class BatchScores:
    """Scores of a batch of CDS, one entry per CDS."""

    mu: np.ndarray
    sigma: np.ndarray
    avg_loglik: np.ndarray
    reward: np.ndarray  # before any constraint penalty; NaN where not finite


BatchScorer = Callable[[pa.Array], BatchScores]


def penalised_rewards(raw: np.ndarray, violations: np.ndarray, margin: float = 0.5) -> np.ndarray:
    """Rewards of a [P, G] block of groups: feasible ones keep their raw reward, an infeasible (or
    non-finite) one gets the group's worst feasible reward (worst finite one when none is feasible, 0 when
    none is finite) minus ``margin`` * (1 + graded violations). Always finite."""
    raw = np.asarray(raw, dtype=float)
    finite = np.isfinite(raw)
    feasible = finite & (violations == 0)
    big = np.finfo(float).max
    worst_feasible = np.where(feasible, raw, big).min(axis=1)
    worst_finite = np.where(finite, raw, big).min(axis=1)
    floor = np.where(feasible.any(axis=1), worst_feasible, np.where(finite.any(axis=1), worst_finite, 0.0))
    penalty = floor[:, None] - margin * (1.0 + np.nan_to_num(violations, nan=1e3, posinf=1e3))
    return np.where(feasible, raw, penalty)


def group_advantages(rewards: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    return (rewards - rewards.mean(axis=1, keepdims=True)) / (rewards.std(axis=1, keepdims=True) + eps)


def host_log_frequencies(host_counts: np.ndarray) -> np.ndarray:
    """Log of the host's codon frequencies (half a count added): the initial policy's logits."""
    total = np.atleast_2d(host_counts).sum(axis=0).astype(float)
    return np.log(total + 0.5)


def _cds_text(codons: np.ndarray, offsets: np.ndarray) -> list[str]:
    """One CDS string per record of concatenated codon indices (record r: codons[offsets[r]:offsets[r+1]])."""
    return [CODON_BYTES[codons[offsets[r]:offsets[r + 1]]].tobytes().decode() for r in range(len(offsets) - 1)]


# ---------------------------------------------------------------------------------------------------------
# The positions of all proteins, concatenated.


@dataclass
class CodonBatch:
    proteins: list[str]  # effective proteins (with Met)
    syn: np.ndarray  # [N, MAX_SYN] codon index per slot
    mask: np.ndarray  # [N, MAX_SYN] slot is a synonym
    z0: np.ndarray  # [N, MAX_SYN] initial logits (host log frequencies)
    prot: np.ndarray  # [N] protein of each position
    starts: np.ndarray  # [P + 1] position offsets (each protein: its codons, then the stop)

    @property
    def n_pos(self) -> int:
        return len(self.prot)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.starts)

    @property
    def n_syn(self) -> np.ndarray:
        return self.mask.sum(axis=1)

    def most_likely_cds(self, logits: np.ndarray) -> list[str]:
        """Per protein, the CDS of the highest-logit codon at every position."""
        return _cds_text(self.syn[np.arange(self.n_pos), logits.argmax(axis=1)], self.starts)


def codon_batch(proteins: list[str], logfreq: np.ndarray, start: str, stop: str) -> CodonBatch:
    """Slots of every position of every protein: the first codon is the start codon, each protein ends
    with one stop position (both single-slot, so they never move)."""
    syn_by_byte = np.zeros((256, MAX_SYN), dtype=np.int64)
    mask_by_byte = np.zeros((256, MAX_SYN), dtype=bool)
    for aa, syn in SYNONYMS.items():
        syn_by_byte[ord(aa), :len(syn)] = syn
        mask_by_byte[ord(aa), :len(syn)] = True
    single = np.arange(MAX_SYN) < 1
    letters = np.frombuffer("".join(q + "*" for q in proteins).encode(), dtype=np.uint8)
    syn, mask = syn_by_byte[letters], mask_by_byte[letters]
    starts = np.concatenate([[0], np.cumsum([len(q) + 1 for q in proteins])])
    syn[starts[:-1]], mask[starts[:-1]] = codon_index(start), single
    syn[starts[1:] - 1], mask[starts[1:] - 1] = codon_index(stop), single
    z0 = np.where(mask, logfreq[syn], _NEG)
    prot = np.repeat(np.arange(len(proteins)), np.diff(starts))
    return CodonBatch(proteins, syn, mask, z0, prot, starts)


def _log_softmax(z: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.where(mask, z, _NEG)
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.where(mask, np.exp(shifted), 0.0)
    total = e.sum(axis=1, keepdims=True)
    return np.where(mask, shifted - np.log(total), _NEG), e / total


def _sample(cdf: np.ndarray, n_syn: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draws: u has shape [..., N] (positions last), returns slot indices of the same shape."""
    k = (u[..., None] > cdf).sum(axis=-1)
    return np.minimum(k, n_syn - 1)


def _gather(b: CodonBatch, group: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices into a [G, N] array in record order (protein-major, then group member), and record
    offsets in codons."""
    n = b.n_pos
    parts = [(np.arange(group)[:, None] * n + np.arange(b.starts[p], b.starts[p + 1])[None]).ravel()
             for p in range(len(b.proteins))]
    lengths = np.repeat(b.lengths, group)
    return np.concatenate(parts), np.concatenate([[0], np.cumsum(lengths)])


def _as_arrow(codons: np.ndarray, codon_offsets: np.ndarray) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """(Arrow strings, byte buffer, byte offsets) from concatenated codon indices, without Python strings."""
    data = CODON_BYTES[codons].ravel()
    offsets = 3 * codon_offsets
    large = offsets[-1] >= 2**31 - 1  # Arrow's 32-bit offsets: switch to large strings past 2 GiB
    buffers = [None, pa.py_buffer(offsets.astype(np.int64 if large else np.int32)), pa.py_buffer(data)]
    arr = pa.Array.from_buffers(pa.large_string() if large else pa.string(), len(offsets) - 1, buffers)
    return arr, data, offsets


class _Adam:
    def __init__(self, shape: tuple[int, ...], lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
        self.m, self.v, self.t = np.zeros(shape), np.zeros(shape), 0
        self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps

    def ascend(self, param: np.ndarray, grad: np.ndarray) -> None:
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * grad
        self.v = self.b2 * self.v + (1 - self.b2) * grad * grad
        m_hat, v_hat = self.m / (1 - self.b1**self.t), self.v / (1 - self.b2**self.t)
        param += self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


@dataclass
class _Policy:
    b: CodonBatch
    theta: np.ndarray  # [P, 64]
    delta: np.ndarray  # [N, MAX_SYN]
    logp_ref: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.logp_ref = self.logits_logp()[0]

    def logits(self) -> np.ndarray:
        return self.b.z0 + self.theta[self.b.prot[:, None], self.b.syn] + self.delta

    def logits_logp(self) -> tuple[np.ndarray, np.ndarray]:
        return _log_softmax(self.logits(), self.b.mask)


def _records_codons(gather: np.ndarray, codon_offsets: np.ndarray,
                    records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The part of ``gather`` (and its codon offsets) that belongs to the selected records."""
    lengths = np.diff(codon_offsets)[records]
    sub_offsets = np.concatenate([[0], np.cumsum(lengths)])
    idx = np.repeat(codon_offsets[records] - sub_offsets[:-1], lengths) + np.arange(sub_offsets[-1])
    return gather[idx], sub_offsets


def _redraw(choice: np.ndarray, cdf: np.ndarray, n_syn: np.ndarray, b: CodonBatch, gather: np.ndarray,
            codon_offsets: np.ndarray, cc: CompiledConstraints, rounds: int, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    """On-policy repair: redraw (from the sampling policy) every codon under a forbidden site, a few rounds;
    only the records just redrawn are scanned again. Returns (choice, graded violations per record)."""
    flat = choice.reshape(-1)  # a view: redraws land in ``choice``
    n = b.n_pos
    records = np.arange(len(codon_offsets) - 1)
    violations = np.zeros(len(records))
    sub_gather, sub_offsets = gather, codon_offsets
    for r in range(rounds + 1):
        codons = b.syn.reshape(-1)[flat[sub_gather] + MAX_SYN * (sub_gather % n)]
        _, data, offsets = _as_arrow(codons, sub_offsets)
        count, _, bad_bytes = scan_batch(data, offsets, cc)
        violations[records] = count
        bad = np.flatnonzero(bad_bytes.reshape(-1, 3).any(axis=1))
        if len(bad) == 0 or r == rounds:
            break
        where = sub_gather[bad]  # flat [G, N] indices of the codons under a site
        pos = where % n
        flat[where] = _sample(cdf[pos], n_syn[pos], rng.random(len(where)))
        records = records[np.unique(np.searchsorted(sub_offsets, bad, side="right") - 1)]
        sub_gather, sub_offsets = _records_codons(gather, codon_offsets, records)
    return choice, violations


def _ppo_update(pol: _Policy, choice: np.ndarray, adv: np.ndarray, logp_old: np.ndarray,
                s: OptimiserSettings, opt_shared: _Adam, opt_local: _Adam) -> None:
    b = pol.b
    n, group = b.n_pos, choice.shape[0]
    idx = (np.arange(n)[None] * MAX_SYN + choice)  # [G, N] flat slot of each sampled codon
    a = adv.T[:, b.prot]  # [G, N] advantage of the sample each codon belongs to
    inv_len = 1.0 / b.lengths[b.prot]
    old = logp_old.reshape(-1)[idx]
    for _ in range(s.ppo_epochs):
        logp, pi = pol.logits_logp()
        ratio = np.exp(logp.reshape(-1)[idx] - old)
        # Gradient flows only where the unclipped branch of min(r A, clip(r) A) is the one taken.
        active = ((a > 0) & (ratio < 1 + s.clip_eps)) | ((a < 0) & (ratio > 1 - s.clip_eps))
        w = a * ratio * active * inv_len[None] / group
        gz = np.bincount(idx.ravel(), weights=w.ravel(), minlength=n * MAX_SYN).reshape(n, MAX_SYN)
        gz -= w.sum(axis=0)[:, None] * pi
        # Exact KL(pi || pi_ref) per position and its gradient pi * (log pi - log ref - KL).
        diff = np.where(b.mask, logp - pol.logp_ref, 0.0)
        kl = (pi * diff).sum(axis=1, keepdims=True)
        gz -= s.kl_beta * inv_len[:, None] * pi * (diff - kl)
        gz = np.where(b.mask, gz, 0.0)
        g_theta = np.bincount((b.prot[:, None] * 64 + b.syn)[b.mask], weights=gz[b.mask],
                              minlength=pol.theta.size).reshape(pol.theta.shape)
        opt_shared.ascend(pol.theta, g_theta)
        opt_local.ascend(pol.delta, gz)


# ---------------------------------------------------------------------------------------------------------
# The optimisation, and the random-synonym baseline drawn the same way.


@dataclass(frozen=True)
class BestSample:
    """The best feasible sample of one protein over a run, with its scores."""

    cds: str
    mu: float
    sigma: float
    avg_loglik: float
    reward: float
    step: int


@dataclass(frozen=True)
class PolicyRun:
    best: list[BestSample | None]  # per protein; None when no sample was ever feasible
    reward_curve: np.ndarray  # [steps + 1, P] mean penalised reward per step (the last: the final policy)
    infeasible_fraction: np.ndarray  # [steps + 1, P] fraction of infeasible samples per step
    final_logp: np.ndarray  # [N, MAX_SYN] log-probabilities of the final policy
    kl_to_initial: np.ndarray  # [P] mean KL per position of the final policy to the initial one


def optimise(b: CodonBatch, cc: CompiledConstraints, score: BatchScorer, s: OptimiserSettings,
             rng: np.random.Generator) -> PolicyRun:
    """``s.steps`` GRPO steps over every protein of ``b``, then one more sampled group from the final
    policy, evaluated like the initial one."""
    n_prot, n, group = len(b.proteins), b.n_pos, s.group
    n_syn = b.n_syn
    gather, codon_offsets = _gather(b, group)
    pol = _Policy(b, np.zeros((n_prot, 64)), np.zeros((n, MAX_SYN)))
    opt_shared = _Adam(pol.theta.shape, s.lr_shared)
    opt_local = _Adam(pol.delta.shape, s.lr_local)
    all_pos = np.arange(n)[None]
    best_raw = np.full(n_prot, -np.inf)
    best: list[BestSample | None] = [None] * n_prot
    curve = np.zeros((s.steps + 1, n_prot))
    infeasible = np.zeros((s.steps + 1, n_prot))

    def sample_and_score(pi: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
        cdf = np.cumsum(pi, axis=1)
        choice = _sample(cdf, n_syn, rng.random((group, n)))
        choice, violations = _redraw(choice, cdf, n_syn, b, gather, codon_offsets, cc,
                                     s.repair_rounds if s.repair_samples else 0, rng)
        arr, _, _ = _as_arrow(b.syn[all_pos, choice].reshape(-1)[gather], codon_offsets)
        scored = score(arr)
        raw = scored.reward.reshape(n_prot, group)
        viol = violations.reshape(n_prot, group)
        rewards = penalised_rewards(raw, viol, s.penalty_margin)
        curve[step] = rewards.mean(axis=1)
        infeasible[step] = (viol > 0).mean(axis=1)
        # Track the best feasible sample of each protein.
        ok = np.where((viol == 0) & np.isfinite(raw), raw, -np.inf)
        top = ok.argmax(axis=1)
        for p in np.flatnonzero(ok[np.arange(n_prot), top] > best_raw):
            r = p * group + top[p]
            best_raw[p] = ok[p, top[p]]
            best[p] = BestSample(arr[r].as_py(), float(scored.mu[r]), float(scored.sigma[r]),
                                 float(scored.avg_loglik[r]), float(best_raw[p]), step)
        return choice, rewards

    for step in range(s.steps):
        logp, pi = pol.logits_logp()
        choice, rewards = sample_and_score(pi, step)
        _ppo_update(pol, choice, group_advantages(rewards), logp, s, opt_shared, opt_local)
    logp, pi = pol.logits_logp()
    sample_and_score(pi, s.steps)
    kl = np.bincount(b.prot, weights=(pi * np.where(b.mask, logp - pol.logp_ref, 0.0)).sum(axis=1)) / b.lengths
    return PolicyRun(best, curve, infeasible, logp, kl)


def random_synonyms(b: CodonBatch, cc: CompiledConstraints, s: OptimiserSettings,
                    rng: np.random.Generator) -> list[str]:
    """The random-synonym baseline: ``s.group`` CDS per protein (protein-major) of uniformly drawn synonyms,
    whose codons under a violation are redrawn like the policy's samples."""
    n = b.n_pos
    n_syn = b.n_syn
    gather, codon_offsets = _gather(b, s.group)
    cdf = np.cumsum(np.where(b.mask, 1.0 / n_syn[:, None], 0.0), axis=1)
    choice, _ = _redraw(_sample(cdf, n_syn, rng.random((s.group, n))), cdf, n_syn, b, gather, codon_offsets, cc,
                        s.repair_rounds, rng)
    return _cds_text(b.syn[np.arange(n)[None], choice].reshape(-1)[gather], codon_offsets)
