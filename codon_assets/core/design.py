"""Surrogate-guided, host-specific CDS design: hard constraints, a repair step, baselines and a GRPO-style
policy optimiser over synonymous codons.

Policy. Every position of a protein has logits over the synonymous codons of its amino acid (a masked
[L, 6] table; 6 is the largest synonym family), written as

    z[i, k] = z0[i, k] + theta[codon(i, k)] + delta[i, k]

z0 is the log of the host's codon frequency (the initial policy is the host's own usage), theta is one
trainable logit per codon shared by all positions of the protein, and delta a trainable per-position offset.
Why both: the surrogate mostly reads whole-CDS composition (codon frequencies, CAI, GC), which theta learns
from the G x L codon choices of every step at once, while delta can still fix what is local (5' GC, the
context of a forbidden site); a per-position table alone would learn from only G samples per parameter.

Optimiser (GRPO). Each step samples a group of G CDS per protein, scores all of them through the surrogate
in one call, turns rewards into group-relative advantages (r - mean) / (std + eps), and takes a few Adam
ascent steps on the PPO clipped objective with per-codon (token-level) ratios against the sampling policy
(a whole-sequence ratio is a product over hundreds of codons and saturates any clip at once), minus
beta * KL(pi || pi_initial) per position.

Reward = mu - lam * sigma + eta * avg_loglik (host Markov model, nats per base) for feasible CDS. An
infeasible CDS gets the group's worst feasible reward (worst of all when none is feasible) minus a margin per
graded violation (forbidden sites + long homopolymers + GC points outside the window): always finite, and
fewer violations still earn more. Samples are first repaired on policy: codons covering a violation are
redrawn from the policy a few times, so they remain policy samples and the ratios stay meaningful.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa

from codon_assets.core.codon_metrics import geometric_mean_index
from codon_assets.core.genetic_code import CODON_TO_AA, CODONS, STOP_CODONS, base_codes, codon_index
from codon_assets.core.hosts import Host
from codon_assets.core.markov import MarkovCdsModel
from codon_assets.core.proteins import ProteinRecord
from codon_assets.core.sequence_stats import codon_counts, gc_content
from codon_assets.core.surrogate import SurrogateModel

DEFAULT_MOTIFS: dict[str, str] = {
    "EcoRI": "GAATTC",
    "BamHI": "GGATCC",
    "HindIII": "AAGCTT",
    "XhoI": "CTCGAG",
    "NotI": "GCGGCCGC",
    "NdeI": "CATATG",
    "BsaI": "GGTCTC",
    "BsaI_rc": "GAGACC",
}
_COMPLEMENT = str.maketrans("ACGT", "TGCA")
_AA_OF = np.array([CODON_TO_AA[c] for c in CODONS])
SYNONYMS: dict[str, np.ndarray] = {aa: np.flatnonzero(_AA_OF == aa) for aa in sorted(set(_AA_OF))}
MAX_SYN = max(len(v) for v in SYNONYMS.values())  # 6 (Leu, Ser, Arg)
CODON_BYTES = np.frombuffer("".join(CODONS).encode(), dtype=np.uint8).reshape(64, 3)
GC_OF_CODON = np.array([sum(b in "GC" for b in c) for c in CODONS])
_INDEX = {c: i for i, c in enumerate(CODONS)}
_NEG = -1e30  # logit of a non-synonymous slot: exp() gives exactly 0, arithmetic stays finite


def reverse_complement(seq: str) -> str:
    return seq.translate(_COMPLEMENT)[::-1]


def host_gc_window(host_counts: np.ndarray, low: float = 5.0, high: float = 95.0) -> tuple[float, float]:
    """The host's own GC window: percentiles of GC over its CDS, from per-record (n, 64) codon counts."""
    gc = gc_content(np.atleast_2d(host_counts))
    return float(np.percentile(gc, low)), float(np.percentile(gc, high))


def preferred_stop(host_counts: np.ndarray) -> str:
    """The host's most used stop codon."""
    total = np.atleast_2d(host_counts).sum(axis=0)
    return max(STOP_CODONS, key=lambda c: (total[codon_index(c)], c))


@dataclass(frozen=True)
class DesignConstraints:
    forbidden_motifs: tuple[tuple[str, str], ...] = tuple(DEFAULT_MOTIFS.items())  # (name, motif), both strands
    gc_min: float = 0.0
    gc_max: float = 1.0
    max_homopolymer: int = 7  # longest run of one base allowed (runs of 8+ are forbidden)
    start_codon: str = "ATG"
    stop_codon: str | None = None  # None: any stop; design_proteins fills in the host's preferred one

    @classmethod
    def for_host(cls, host_counts: np.ndarray, low: float = 5.0, high: float = 95.0, **overrides) -> DesignConstraints:
        """Defaults with the host's GC window (from per-record counts) and its preferred stop codon."""
        lo, hi = host_gc_window(host_counts, low, high) if np.ndim(host_counts) == 2 else (0.0, 1.0)
        return cls(**{"gc_min": lo, "gc_max": hi, "stop_codon": preferred_stop(host_counts), **overrides})

    def patterns(self) -> list[tuple[str, str, str]]:
        """(name, pattern, strand) for both strands of every motif; a palindrome is listed once."""
        out, seen = [], set()
        for name, motif in self.forbidden_motifs:
            motif = motif.upper()
            if not motif or set(motif) - set("ACGT"):
                raise ValueError(f"forbidden motif {name}={motif!r} must be A/C/G/T")
            for pattern, strand in ((motif, "+"), (reverse_complement(motif), "-")):
                if pattern not in seen:
                    seen.add(pattern)
                    out.append((name, pattern, strand))
        return out


# ---------------------------------------------------------------------------------------------------------
# Constraint checks on one CDS (reports) and on whole batches (the optimiser).


@dataclass(frozen=True)
class _Compiled:
    patterns: list[tuple[str, str, str]]
    by_length: dict[int, np.ndarray]  # motif length -> 2-bit codes (A0 C1 T2 G3, as base_codes)
    run: int  # forbidden homopolymer length
    homopolymer: re.Pattern
    gc_min: float
    gc_max: float


def _compile(c: DesignConstraints) -> _Compiled:
    patterns = c.patterns()
    by_length: dict[int, list[int]] = {}
    for _, pattern, _ in patterns:
        code = 0
        for b in pattern:
            code = code * 4 + "ACTG".index(b)
        by_length.setdefault(len(pattern), []).append(code)
    run = c.max_homopolymer + 1
    return _Compiled(patterns, {k: np.array(v, dtype=np.uint64) for k, v in by_length.items()}, run,
                     re.compile("|".join(f"{b}{{{run},}}" for b in "ACGT")), c.gc_min, c.gc_max)


def _sites(seq: str, cc: _Compiled) -> list[tuple[int, int, str]]:
    """Forbidden sites of one CDS as (start, end, label): motif hits on either strand and long runs."""
    sites = []
    for name, pattern, strand in cc.patterns:
        i = seq.find(pattern)
        while i >= 0:
            sites.append((i, i + len(pattern), f"{name} {pattern} ({strand}) at {i + 1}"))
            i = seq.find(pattern, i + 1)
    for m in cc.homopolymer.finditer(seq):
        sites.append((m.start(), m.end(), f"{m.group()[0]}x{m.end() - m.start()} at {m.start() + 1}"))
    return sorted(sites)


def _gc(seq: str) -> float:
    return (seq.count("G") + seq.count("C")) / max(len(seq), 1)


def _violation_score(seq: str, cc: _Compiled) -> float:
    """Graded violations: sites plus GC percentage points outside the window (0 means feasible)."""
    gc = _gc(seq)
    return len(_sites(seq, cc)) + 100.0 * max(cc.gc_min - gc, gc - cc.gc_max, 0.0)


def constraint_report(cds: str, protein: str, constraints: DesignConstraints) -> dict:
    """Every constraint with pass/fail and details. ``protein`` is what the CDS must encode (no stop); the
    start codon is read as Met whatever it is (as the initiator tRNA does)."""
    cc = _compile(constraints)
    cds = cds.upper()
    checks: dict[str, dict] = {}
    ok_alphabet = bool(cds) and not set(cds) - set("ACGT") and len(cds) % 3 == 0
    checks["alphabet"] = {"pass": ok_alphabet,
                          "detail": f"{len(cds)} nt" + ("" if ok_alphabet else ", not whole A/C/G/T codons")}
    codons = [cds[i:i + 3] for i in range(0, len(cds) - len(cds) % 3, 3)]
    checks["start_codon"] = {"pass": bool(codons) and codons[0] == constraints.start_codon,
                             "detail": f"{codons[0] if codons else ''} (want {constraints.start_codon})"}
    last = codons[-1] if codons else ""
    want_stop = constraints.stop_codon or "any stop"
    checks["stop_codon"] = {"pass": CODON_TO_AA.get(last) == "*" and last == (constraints.stop_codon or last),
                            "detail": f"{last} (want {want_stop})"}
    internal = [i + 1 for i, c in enumerate(codons[:-1]) if CODON_TO_AA.get(c) == "*"]
    checks["no_internal_stop"] = {"pass": not internal,
                                  "detail": f"stops at codons {internal[:5]}" if internal else "none"}
    encoded = "M" + "".join(CODON_TO_AA.get(c, "X") for c in codons[1:-1]) if len(codons) >= 2 else ""
    same = encoded == protein
    first_diff = next((i + 1 for i, (a, b) in enumerate(zip(encoded, protein)) if a != b),
                      min(len(encoded), len(protein)) + 1)
    checks["back_translation"] = {"pass": same, "detail": "exact" if same else
                                  f"differs at residue {first_diff} ({len(encoded)} vs {len(protein)} aa)"}
    sites = _sites(cds, cc) if ok_alphabet else []
    motifs = [s[2] for s in sites if "(" in s[2]]
    runs = [s[2] for s in sites if "(" not in s[2]]
    checks["forbidden_motifs"] = {"pass": not motifs, "detail": "; ".join(motifs[:10]) or "none on either strand"}
    longest = max((len(m.group()) for m in re.finditer(r"A+|C+|G+|T+", cds)), default=0)
    checks["homopolymer"] = {"pass": not runs, "detail": f"longest run {longest} (max {constraints.max_homopolymer})"
                             + (f": {'; '.join(runs[:5])}" if runs else "")}
    gc = _gc(cds)
    checks["gc_window"] = {"pass": cc.gc_min <= gc <= cc.gc_max,
                           "detail": f"GC {gc:.3f} (window {cc.gc_min:.3f}-{cc.gc_max:.3f})"}
    return {"feasible": all(c["pass"] for c in checks.values()), "checks": checks}


def is_feasible(cds: str, protein: str, constraints: DesignConstraints) -> bool:
    return constraint_report(cds, protein, constraints)["feasible"]


def _scan(data: np.ndarray, offsets: np.ndarray, cc: _Compiled) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a whole batch buffer: (graded violations per record, GC per record, byte mask of violating sites).

    Motifs are found as 2-bit k-mer codes over the whole buffer, grown one base at a time (so every motif
    length shares the passes) and looked up in a table; hits are rare, so only they are checked for
    straddling two records. Runs are windows of ``run`` bases whose neighbours are all equal.
    """
    base, _ = base_codes(data)
    n, lengths = len(data), np.diff(offsets)
    n_rec = len(lengths)
    count = np.zeros(n_rec)
    mark = np.zeros(n + 1, dtype=np.int64)

    def add_hits(hit: np.ndarray, k: int) -> None:
        rec = np.searchsorted(offsets, hit, side="right") - 1
        inside = hit + k <= offsets[rec + 1]
        hit, rec = hit[inside], rec[inside]
        np.add.at(count, rec, 1)
        np.add.at(mark, hit, 1)  # few hits: cheaper than a bincount over the whole buffer
        np.add.at(mark, hit + k, -1)

    kmer = np.zeros(n, dtype=np.uint32 if max(cc.by_length, default=0) <= 16 else np.uint64)
    for k in range(1, max(cc.by_length, default=0) + 1):
        if n < k:
            break
        head = kmer[:n - k + 1]  # head[i]: code of bases i..i+k-1
        head *= 4
        head += base[k - 1:]
        if k in cc.by_length:
            codes = cc.by_length[k]
            if k <= 10:
                table = np.zeros(4**k, dtype=bool)
                table[codes] = True
                add_hits(np.flatnonzero(table[head]), k)
            else:
                add_hits(np.flatnonzero(np.isin(head, codes.astype(head.dtype))), k)
    m = cc.run
    if n >= m:
        eq = np.zeros(n, dtype=np.int32)
        eq[:-1] = base[1:] == base[:-1]
        eq[offsets[1:-1] - 1] = 0  # never across two records
        csum = np.concatenate([[0], np.cumsum(eq, dtype=np.int32)])
        window = np.flatnonzero(csum[m - 1:n] - csum[:n - m + 1] == m - 1)  # bases i..i+m-1 all equal
        if len(window):
            starts = window[np.concatenate([[True], np.diff(window) > 1])]  # one count per run
            np.add.at(count, np.searchsorted(offsets, starts, side="right") - 1, 1)
            np.add.at(mark, window, 1)
            np.add.at(mark, window + m, -1)
    gc_cum = np.concatenate([[0], np.cumsum((data == ord("G")) | (data == ord("C")), dtype=np.int64)])
    gc = (gc_cum[offsets[1:]] - gc_cum[offsets[:-1]]) / np.maximum(lengths, 1)
    count += 100.0 * np.maximum(np.maximum(cc.gc_min - gc, gc - cc.gc_max), 0.0)
    return count, gc, np.cumsum(mark)[:n] > 0


# ---------------------------------------------------------------------------------------------------------
# Repair by synonymous changes (deterministic; for baselines and final candidates).


def repair_cds(cds: str, constraints: DesignConstraints, codon_logw: np.ndarray | None = None,
               max_rounds: int = 4) -> str:
    """Break forbidden sites (both strands) and long runs, then move GC into the window, by synonymous
    changes that keep the first and last codon. Among fixes, the one preferred by ``codon_logw`` (host log
    frequencies) wins. Returns the best CDS reached (unchanged where nothing helps)."""
    cc = _compile(constraints)
    logw = np.zeros(64) if codon_logw is None else codon_logw
    codons = [cds[i:i + 3] for i in range(0, len(cds), 3)]
    editable = range(1, len(codons) - 1)
    alts = {i: [CODONS[j] for j in SYNONYMS[CODON_TO_AA[codons[i]]] if CODONS[j] != codons[i]] for i in editable}
    seq = "".join(codons)

    def n_sites(cs: list[str]) -> int:
        return len(_sites("".join(cs), cc))

    for _ in range(max_rounds):
        # 1. Forbidden sites: try single synonymous changes in the codons under a site, then pairs.
        stuck: set[tuple[int, int]] = set()
        while True:
            sites = [s for s in _sites(seq, cc) if (s[0], s[1]) not in stuck]
            if not sites:
                break
            start, end, _ = sites[0]
            current = n_sites(codons)
            under = [i for i in range(start // 3, (end - 1) // 3 + 1) if 0 < i < len(codons) - 1]
            best: tuple | None = None
            for i in under:
                for alt in alts[i]:
                    trial = codons[:i] + [alt] + codons[i + 1:]
                    key = (n_sites(trial), -(logw[_INDEX[alt]] - logw[_INDEX[codons[i]]]))
                    if key[0] < current and (best is None or key < best[0]):
                        best = (key, [(i, alt)])
            if best is None:  # no single change helps: try two codons at once
                for a in under:
                    for b in under:
                        if b <= a:
                            continue
                        for alt_a in alts[a]:
                            for alt_b in alts[b]:
                                trial = list(codons)
                                trial[a], trial[b] = alt_a, alt_b
                                key = (n_sites(trial), 0.0)
                                if key[0] < current and (best is None or key < best[0]):
                                    best = (key, [(a, alt_a), (b, alt_b)])
            if best is None:
                stuck.add((start, end))
                continue
            for i, alt in best[1]:
                alts[i] = alts[i] + [codons[i]]
                alts[i].remove(alt)
                codons[i] = alt
            seq = "".join(codons)
        # 2. GC: cheapest changes (least host-preference lost per GC step) in the needed direction, kept
        # only where they create no new site.
        gc = _gc(seq)
        if cc.gc_min <= gc <= cc.gc_max:
            break
        direction = 1 if gc < cc.gc_min else -1
        moves = []
        for i in editable:
            g0 = GC_OF_CODON[_INDEX[codons[i]]]
            for alt in alts[i]:
                dg = (GC_OF_CODON[_INDEX[alt]] - g0) * direction
                if dg > 0:
                    moves.append(((logw[_INDEX[codons[i]]] - logw[_INDEX[alt]]) / dg, i, alt))
        sites_now = n_sites(codons)
        changed: set[int] = set()
        for _, i, alt in sorted(moves):
            if i in changed:
                continue
            trial = codons[:i] + [alt] + codons[i + 1:]
            if n_sites(trial) > sites_now:
                continue
            alts[i] = alts[i] + [codons[i]]
            alts[i].remove(alt)
            codons[i] = alt
            changed.add(i)
            gc = _gc("".join(codons))
            if cc.gc_min <= gc <= cc.gc_max:
                break
        seq = "".join(codons)
        if not _sites(seq, cc) and cc.gc_min <= _gc(seq) <= cc.gc_max:
            break
    return seq


# ---------------------------------------------------------------------------------------------------------
# Scoring.


@dataclass
class _Scorer:
    surrogate: SurrogateModel
    host_key: str
    markov: MarkovCdsModel | None
    lam: float
    eta: float
    calls: int = 0
    scored: int = 0

    def __call__(self, seqs: pa.Array) -> dict[str, np.ndarray]:
        """mu, sigma, avg_loglik and raw reward of a batch, in one surrogate call."""
        self.calls += 1
        self.scored += len(seqs)
        hashes = [hashlib.sha256(s.encode()).hexdigest() for s in seqs.to_pylist()]
        host = np.full(len(seqs), self.host_key)
        # Designed CDS are never in the Markov training set, so they are scored by the full model; a native
        # CDS that is, by the model of the other folds (as in training).
        evo2 = self.surrogate.markov_features(seqs, hashes, host)
        mu, sigma = self.surrogate.predict(seqs, evo2, host)
        own = self.markov is None or self.markov is self.surrogate.markov_models.get(self.host_key)
        loglik = evo2["avg_loglik"] if own else self.markov.score_stats(seqs, hashes)["avg_loglik"]
        raw = mu - self.lam * sigma + self.eta * loglik
        # A non-finite score (never expected from LightGBM) must not poison a group: make it the worst.
        raw = np.where(np.isfinite(raw), raw, np.nan)
        return {"mu": mu, "sigma": sigma, "avg_loglik": np.asarray(loglik, dtype=float), "raw": raw}


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


# ---------------------------------------------------------------------------------------------------------
# The policy over all proteins at once (positions concatenated).


@dataclass
class _Batch:
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


def _batch(proteins: list[str], logfreq: np.ndarray, start: str, stop: str) -> _Batch:
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
    return _Batch(proteins, syn, mask, z0, prot, starts)


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


def _gather(b: _Batch, group: int) -> tuple[np.ndarray, np.ndarray]:
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
class OptimiserSettings:
    lr_shared: float = 0.1  # Adam step for the per-codon logits shared along the protein
    lr_local: float = 0.03  # Adam step for the per-position offsets (noisier: smaller)
    ppo_epochs: int = 4  # updates per sampled group (ratios depart from 1 after the first)
    clip_eps: float = 0.2
    repair_rounds: int = 3  # on-policy redraws of codons under a violation, per sample
    penalty_margin: float = 0.5


@dataclass
class _Policy:
    b: _Batch
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


def _redraw(choice: np.ndarray, cdf: np.ndarray, n_syn: np.ndarray, b: _Batch, gather: np.ndarray,
            codon_offsets: np.ndarray, cc: _Compiled, rounds: int, rng: np.random.Generator
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
        count, _, bad_bytes = _scan(data, offsets, cc)
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


def _ppo_update(pol: _Policy, choice: np.ndarray, adv: np.ndarray, logp_old: np.ndarray, kl_beta: float,
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
        gz -= kl_beta * inv_len[:, None] * pi * (diff - kl)
        gz = np.where(b.mask, gz, 0.0)
        g_theta = np.bincount((b.prot[:, None] * 64 + b.syn)[b.mask], weights=gz[b.mask],
                              minlength=pol.theta.size).reshape(pol.theta.shape)
        opt_shared.ascend(pol.theta, g_theta)
        opt_local.ascend(pol.delta, gz)


# ---------------------------------------------------------------------------------------------------------
# The design run.


def _host_logfreq(host_counts: np.ndarray) -> np.ndarray:
    total = np.atleast_2d(host_counts).sum(axis=0).astype(float)
    return np.log(total + 0.5)


def _as_records(proteins) -> list[tuple[str, str, str | None]]:
    if isinstance(proteins, Mapping):
        return [(k, v, None) for k, v in proteins.items()]
    out = []
    for item in proteins:
        if isinstance(item, ProteinRecord):
            out.append((item.protein_id, item.protein, item.native_cds))
        else:
            out.append((item[0], item[1], item[2] if len(item) > 2 else None))
    return out


def design_proteins(
    proteins: Sequence[ProteinRecord] | Sequence[tuple[str, str]] | Mapping[str, str],
    host: Host | str,
    surrogate: SurrogateModel,
    markov: MarkovCdsModel | None,
    codon_counts_of_host: np.ndarray,
    constraints: DesignConstraints | None = None,
    steps: int = 40,
    group: int = 16,
    seed: int = 0,
    lam: float = 0.5,
    eta: float = 1.0,
    kl_beta: float = 0.05,
    natives: Mapping[str, str] | None = None,
    settings: OptimiserSettings | None = None,
    repair_samples: bool = True,
) -> list[dict]:
    """Design one CDS per protein for ``host`` (see the module docstring). ``codon_counts_of_host`` is the
    host's (records, 64) or summed (64,) codon counts: initial policy, preferred-codon baseline and, when
    ``constraints`` is None, the GC window and preferred stop. ``markov`` scores the eta term (None: the
    surrogate's own Markov model of the host). Deterministic for a given seed."""
    t0 = time.perf_counter()
    key = host if isinstance(host, str) else host.key
    if key not in surrogate.markov_models:
        raise ValueError(f"the surrogate has no Markov model for host {key!r}: set surrogate.markov_models[{key!r}]")
    s = settings or OptimiserSettings()
    c = constraints or DesignConstraints.for_host(codon_counts_of_host)
    if c.stop_codon is None:
        c = replace(c, stop_codon=preferred_stop(codon_counts_of_host))
    if CODON_TO_AA.get(c.stop_codon) != "*":
        raise ValueError(f"stop codon {c.stop_codon!r} is not a stop")
    cc = _compile(c)
    records = _as_records(proteins)
    if not records:
        return []
    natives = dict(natives or {})
    for pid, _, native in records:
        if native and pid not in natives:
            natives[pid] = native
    for pid, q, _ in records:
        if not q or set(q) - set("ACDEFGHIKLMNPQRSTVWY"):
            raise ValueError(f"protein {pid!r}: empty or not the 20 standard amino acids (read it with read_proteins)")
    effective = [q if q.startswith("M") else "M" + q for _, q, _ in records]  # every CDS starts with Met
    logfreq = _host_logfreq(codon_counts_of_host)
    b = _batch(effective, logfreq, c.start_codon, c.stop_codon)
    n_prot, n = len(effective), b.n_pos
    n_syn = b.mask.sum(axis=1)
    gather, codon_offsets = _gather(b, group)
    score = _Scorer(surrogate, key, markov, lam, eta)
    rng = np.random.default_rng(seed)
    pol = _Policy(b, np.zeros((n_prot, 64)), np.zeros((n, MAX_SYN)))
    opt_shared = _Adam(pol.theta.shape, s.lr_shared)
    opt_local = _Adam(pol.delta.shape, s.lr_local)
    all_pos = np.arange(n)[None]

    best_raw = np.full(n_prot, -np.inf)
    best_seq: list[str | None] = [None] * n_prot
    best_stats: list[dict] = [{} for _ in range(n_prot)]
    curve = np.zeros((steps + 1, n_prot))
    infeasible = np.zeros((steps + 1, n_prot))

    def sample_and_score(logp: np.ndarray, pi: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
        cdf = np.cumsum(pi, axis=1)
        choice = _sample(cdf, n_syn, rng.random((group, n)))
        choice, violations = _redraw(choice, cdf, n_syn, b, gather, codon_offsets, cc,
                                     s.repair_rounds if repair_samples else 0, rng)
        arr, _, _ = _as_arrow(b.syn[all_pos, choice].reshape(-1)[gather], codon_offsets)
        scored = score(arr)
        raw = scored["raw"].reshape(n_prot, group)
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
            best_seq[p] = arr[r].as_py()
            best_stats[p] = {k: float(scored[k][r]) for k in ("mu", "sigma", "avg_loglik")} | {"step": step}
        return choice, rewards

    for step in range(steps):
        logp, pi = pol.logits_logp()
        choice, rewards = sample_and_score(logp, pi, step)
        _ppo_update(pol, choice, group_advantages(rewards), logp, kl_beta, s, opt_shared, opt_local)
    logp, pi = pol.logits_logp()
    sample_and_score(logp, pi, steps)  # the final policy, evaluated like the initial one
    kl_final = np.bincount(b.prot, weights=(pi * np.where(b.mask, logp - pol.logp_ref, 0.0)).sum(axis=1)) / b.lengths

    # Final candidates and baselines, all scored in one call.
    greedy = b.syn[np.arange(n), logp.argmax(axis=1)]
    preferred = b.syn[np.arange(n), b.z0.argmax(axis=1)]
    uniform = np.where(b.mask, 1.0 / n_syn[:, None], 0.0)
    cdf_u = np.cumsum(uniform, axis=1)
    rand_choice, _ = _redraw(_sample(cdf_u, n_syn, rng.random((group, n))), cdf_u, n_syn, b, gather,
                             codon_offsets, cc, s.repair_rounds, rng)
    rand_codons = b.syn[all_pos, rand_choice].reshape(-1)[gather]

    def text(codons: np.ndarray) -> list[str]:
        return [CODON_BYTES[codons[b.starts[p]:b.starts[p + 1]]].tobytes().decode() for p in range(n_prot)]

    def fixed(seq: str) -> str:
        return seq if _violation_score(seq, cc) == 0 else repair_cds(seq, c, logfreq)

    greedy_seqs = [fixed(x) for x in text(greedy)]
    pref_seqs = [fixed(x) for x in text(preferred)]
    rand_seqs = [fixed(CODON_BYTES[rand_codons[codon_offsets[r]:codon_offsets[r + 1]]].tobytes().decode())
                 for r in range(n_prot * group)]
    native_ids = [p for p, (pid, _, _) in enumerate(records) if _scorable(natives.get(pid))]
    native_seqs = [natives[records[p][0]].upper() for p in native_ids]
    batch = greedy_seqs + pref_seqs + rand_seqs + native_seqs
    scored = score(pa.array(batch, pa.string()))

    def stats(i: int, protein: str) -> dict:
        return {"cds": batch[i], "mu": float(scored["mu"][i]), "sigma": float(scored["sigma"][i]),
                "avg_loglik": float(scored["avg_loglik"][i]), "reward": float(scored["raw"][i]),
                "feasible": is_feasible(batch[i], protein, c)}

    cai_w = surrogate.builders[key].cai_weights
    out = []
    for p, (pid, given, _) in enumerate(records):
        protein = effective[p]
        # The optimiser's design: the better feasible of its best sample and its final greedy (repaired) CDS.
        cands = []
        if best_seq[p] is not None:
            cands.append({"cds": best_seq[p], **{k: best_stats[p][k] for k in ("mu", "sigma", "avg_loglik")},
                          "reward": float(best_raw[p]), "feasible": is_feasible(best_seq[p], protein, c),
                          "source": f"sample@step{best_stats[p]['step']}"})
        cands.append(stats(p, protein) | {"source": "policy_greedy"})
        design = max(cands, key=lambda d: (d["feasible"], d["reward"]))
        pref = stats(n_prot + p, protein)
        rands = [stats(2 * n_prot + p * group + g, protein) for g in range(group)]
        rand = max(rands, key=lambda d: (d["feasible"], d["reward"]))
        native = stats(2 * n_prot + n_prot * group + native_ids.index(p), protein) if p in native_ids else None
        counts = codon_counts(pa.array([design["cds"]]))
        report = constraint_report(design["cds"], protein, c)
        row = {
            "protein_id": pid,
            "protein": protein,
            "met_added": protein != given,
            "length_aa": len(protein),
            "cds": design["cds"],
            "source": design["source"],
            "mu": design["mu"],
            "sigma": design["sigma"],
            "reward": design["reward"],
            "avg_loglik": design["avg_loglik"],
            "cai": float(geometric_mean_index(counts, cai_w)[0]),
            "gc": _gc(design["cds"]),
            "feasible": report["feasible"],
            "constraints": report,
            "reward_initial_mean": float(curve[0, p]),
            "reward_final_mean": float(curve[-1, p]),
            "reward_curve": [float(v) for v in curve[:, p]],
            "infeasible_fraction_initial": float(infeasible[0, p]),
            "infeasible_fraction_final": float(infeasible[-1, p]),
            "kl_to_initial": float(kl_final[p]),
            "baseline_preferred": _summary(pref),
            "baseline_random": _summary(rand),
            "gain_over_preferred": {"reward": design["reward"] - pref["reward"], "mu": design["mu"] - pref["mu"]},
            "gain_over_random": {"reward": design["reward"] - rand["reward"], "mu": design["mu"] - rand["mu"]},
            "native": _summary(native) if native else None,
            "improvement_over_native": (
                {"reward": design["reward"] - native["reward"], "mu": design["mu"] - native["mu"]} if native else None),
        }
        out.append(row)
    elapsed = time.perf_counter() - t0
    for row in out:
        row["run"] = {"host": key, "seed": seed, "steps": steps, "group": group, "lam": lam, "eta": eta,
                      "kl_beta": kl_beta, "surrogate_calls": score.calls, "sequences_scored": score.scored,
                      "seconds": round(elapsed, 3)}
    return out


def _scorable(cds: str | None) -> bool:
    return bool(cds) and not set(cds.upper()) - set("ACGT") and len(cds) % 3 == 0


def _summary(d: dict) -> dict:
    return {k: d[k] for k in ("cds", "mu", "sigma", "avg_loglik", "reward", "feasible")}


def design_summary(designs: list[dict]) -> dict:
    """Means over proteins of the gains of the designs over both baselines (and over natives where given)."""
    if not designs:
        return {"n_proteins": 0}

    def mean(values: list[float]) -> float | None:
        return float(np.mean(values)) if values else None

    natives = [d["improvement_over_native"] for d in designs if d["improvement_over_native"]]
    return {
        "n_proteins": len(designs),
        "n_feasible": sum(d["feasible"] for d in designs),
        "mean_reward": mean([d["reward"] for d in designs]),
        "mean_mu": mean([d["mu"] for d in designs]),
        "mean_reward_gain_over_preferred": mean([d["gain_over_preferred"]["reward"] for d in designs]),
        "mean_reward_gain_over_random": mean([d["gain_over_random"]["reward"] for d in designs]),
        "mean_mu_gain_over_preferred": mean([d["gain_over_preferred"]["mu"] for d in designs]),
        "mean_mu_gain_over_random": mean([d["gain_over_random"]["mu"] for d in designs]),
        "mean_reward_gain_over_native": mean([x["reward"] for x in natives]),
        "mean_mu_gain_over_native": mean([x["mu"] for x in natives]),
        "n_with_native": len(natives),
        "mean_initial_policy_reward": mean([d["reward_initial_mean"] for d in designs]),
        "mean_final_policy_reward": mean([d["reward_final_mean"] for d in designs]),
    }
