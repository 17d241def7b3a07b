"""Hard constraints on a designed CDS, checked three ways: a report per CDS (every constraint, pass/fail
and why), a graded violation count per CDS, and a vectorised scan of whole sample batches for the
optimiser; and a deterministic repair by synonymous changes.

Constraints: whole A/C/G/T codons, the start codon, the (host's preferred) stop codon, no internal stop,
exact back-translation, no forbidden restriction site on either strand, no homopolymer longer than
``max_homopolymer`` and GC inside the host's window.

Forbidden motifs may use IUPAC codes (GCCNNNNNGGC, GGTNACC, RAATTY). One CDS is searched with ``str.find``
for a plain motif and a regular expression for a degenerate one; sample batches are scanned as 2-bit k-mer
codes, where N positions are masked out of the code and the other degenerate letters are expanded into the
few concrete k-mers they stand for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import product

import numpy as np

from codon_assets.core.codon_metrics import host_gc_window
from codon_assets.core.genetic_code import (
    CODON_TO_AA,
    CODONS,
    GC_PER_CODON,
    STOP_CODONS,
    SYNONYMS,
    base_codes,
    codon_index,
)
from codon_assets.core.design_settings import (  # DEFAULT_MOTIFS: re-exported, defined with the other defaults
    DEFAULT_MOTIFS,  # noqa: F401
    IUPAC_BASES,
    MAX_MOTIF_EXPANSIONS,
    MAX_MOTIF_LENGTH,
    OptimiserSettings,
    motif_expansions,
)

_IUPAC_COMPLEMENT = str.maketrans("ACGTRYSWKMBDHVN", "TGCAYRSWMKVHDBN")


def iupac_reverse_complement(motif: str) -> str:
    """Reverse complement of an IUPAC motif (R <-> Y, K <-> M, B <-> V, D <-> H; S, W, N unchanged)."""
    return motif.translate(_IUPAC_COMPLEMENT)[::-1]


def is_degenerate(motif: str) -> bool:
    return bool(set(motif) - set("ACGT"))


def motif_regex(motif: str) -> re.Pattern:
    """A regular expression finding every (also overlapping) occurrence of an IUPAC motif: group 1."""
    body = "".join(b if b in "ACGT" else f"[{IUPAC_BASES[b]}]" for b in motif)
    return re.compile(f"(?=({body}))")


def preferred_stop(host_counts: np.ndarray) -> str:
    """The host's most used stop codon."""
    total = np.atleast_2d(host_counts).sum(axis=0)
    return max(STOP_CODONS, key=lambda c: (total[codon_index(c)], c))


@dataclass(frozen=True)
class DesignConstraints:
    forbidden_motifs: tuple[tuple[str, str], ...] = tuple(DEFAULT_MOTIFS.items())  # (name, IUPAC motif), both strands
    gc_min: float = 0.0
    gc_max: float = 1.0
    max_homopolymer: int = 7  # longest run of one base allowed (runs of 8+ are forbidden)
    start_codon: str = "ATG"
    stop_codon: str | None = None  # None: any stop; design_proteins fills in the host's preferred one

    @classmethod
    def for_host(cls, host_counts: np.ndarray, **overrides) -> DesignConstraints:
        """Defaults with the host's GC window (from per-record counts; none from summed counts) and its
        preferred stop codon; ``overrides`` replace any field."""
        lo, hi = host_gc_window(host_counts) if np.ndim(host_counts) == 2 else (0.0, 1.0)
        return cls(**{"gc_min": lo, "gc_max": hi, "stop_codon": preferred_stop(host_counts), **overrides})

    def with_sites(self, sites: tuple[tuple[str, str], ...]) -> DesignConstraints:
        """These constraints with ``sites`` ((name, IUPAC motif) pairs) forbidden as well; a pair already
        forbidden is not repeated."""
        return replace(self, forbidden_motifs=tuple(dict.fromkeys((*self.forbidden_motifs, *sites))))

    def with_settings(self, settings: OptimiserSettings) -> DesignConstraints:
        """These constraints with the sites of ``settings`` (its motifs and enzymes) forbidden as well."""
        return self.with_sites(settings.forbidden_sites())

    def patterns(self) -> list[tuple[str, str, str]]:
        """(name, pattern, strand) for both strands of every motif; a palindrome is listed once (and so is
        a pattern that two names share: under the first)."""
        out, seen = [], set()
        for name, motif in self.forbidden_motifs:
            motif = motif.upper()
            if not motif or set(motif) - set(IUPAC_BASES) or set(motif) == {"N"}:
                raise ValueError(f"forbidden motif {name}={motif!r} must be IUPAC nucleotide codes, not only N")
            if len(motif) > MAX_MOTIF_LENGTH or motif_expansions(motif) > MAX_MOTIF_EXPANSIONS:
                raise ValueError(f"forbidden motif {name}={motif!r}: longer than {MAX_MOTIF_LENGTH} or more "
                                 f"than {MAX_MOTIF_EXPANSIONS} concrete k-mers besides its N positions")
            for pattern, strand in ((motif, "+"), (iupac_reverse_complement(motif), "-")):
                if pattern not in seen:
                    seen.add(pattern)
                    out.append((name, pattern, strand))
        return out


@dataclass(frozen=True)
class KmerGroup:
    """Motif patterns of one length and one set of N positions, as the 2-bit k-mer codes (A0 C1 T2 G3, as
    base_codes) a window must have once its N positions are masked to 0."""

    k: int
    mask: int  # code & mask keeps the bits of the specified (non-N) positions
    codes: np.ndarray  # uint64, sorted, unique
    weights: np.ndarray  # per code, how many patterns of the group it matches (a site counts once a pattern)

    @property
    def masked(self) -> bool:
        return self.mask != 4**self.k - 1


def _kmer_codes(pattern: str) -> tuple[int, list[int]]:
    """(mask, codes) of an IUPAC pattern: N positions are 0 in both, other letters are expanded."""
    mask = 0
    for b in pattern:
        mask = mask * 4 + (0 if b == "N" else 3)
    codes = []
    for bases in product(*("A" if b == "N" else IUPAC_BASES[b] for b in pattern)):
        code = 0
        for b, letter in zip(bases, pattern):
            code = code * 4 + (0 if letter == "N" else "ACTG".index(b))
        codes.append(code)
    return mask, codes


@dataclass(frozen=True)
class CompiledConstraints:
    """The constraints in the form the checks use: motif k-mer codes by length and N positions, a regular
    expression per degenerate pattern, the homopolymer pattern."""

    patterns: list[tuple[str, str, str]]
    kmer_groups: tuple[KmerGroup, ...]  # by length, then mask
    regexes: dict[str, re.Pattern]  # by degenerate pattern (plain patterns are found with str.find)
    run: int  # forbidden homopolymer length
    homopolymer: re.Pattern
    gc_min: float
    gc_max: float

    @property
    def max_motif_length(self) -> int:
        return max((g.k for g in self.kmer_groups), default=0)


def compile_constraints(c: DesignConstraints) -> CompiledConstraints:
    """The checks' form of ``c``, cached (the checks of one CDS compile the same constraints over and over):
    treat it as read-only."""
    try:
        return _compile_cached(c)
    except TypeError:  # unhashable fields (a list of motifs): compile afresh
        return _compile(c)


@lru_cache(maxsize=64)
def _compile_cached(c: DesignConstraints) -> CompiledConstraints:
    return _compile(c)


def _compile(c: DesignConstraints) -> CompiledConstraints:
    patterns = c.patterns()
    groups: dict[tuple[int, int], list[int]] = {}
    for _, pattern, _ in patterns:
        mask, codes = _kmer_codes(pattern)
        groups.setdefault((len(pattern), mask), []).extend(codes)
    kmer_groups = tuple(KmerGroup(k, mask, *np.unique(np.array(codes, dtype=np.uint64), return_counts=True))
                        for (k, mask), codes in sorted(groups.items()))
    regexes = {pattern: motif_regex(pattern) for _, pattern, _ in patterns if is_degenerate(pattern)}
    run = c.max_homopolymer + 1
    return CompiledConstraints(patterns, kmer_groups, regexes, run,
                               re.compile("|".join(f"{b}{{{run},}}" for b in "ACGT")), c.gc_min, c.gc_max)


# ---------------------------------------------------------------------------------------------------------
# One CDS: the report, and graded violations.


@dataclass(frozen=True)
class ConstraintCheck:
    passed: bool
    detail: str


@dataclass(frozen=True)
class ConstraintReport:
    checks: dict[str, ConstraintCheck]  # by constraint name, in the order they are checked

    @property
    def feasible(self) -> bool:
        return all(c.passed for c in self.checks.values())

    def as_dict(self) -> dict:
        """The JSON layout of the report: {"feasible": ..., "checks": {name: {"pass": ..., "detail": ...}}}."""
        return {"feasible": self.feasible,
                "checks": {name: {"pass": c.passed, "detail": c.detail} for name, c in self.checks.items()}}


def _sites(seq: str, cc: CompiledConstraints) -> list[tuple[int, int, str]]:
    """Forbidden sites of one CDS as (start, end, label): motif hits on either strand and long runs."""
    sites = []
    for name, pattern, strand in cc.patterns:
        if pattern in cc.regexes:
            for m in cc.regexes[pattern].finditer(seq):
                i = m.start(1)
                sites.append((i, i + len(pattern), f"{name} {pattern} ({strand}) at {i + 1}"))
            continue
        i = seq.find(pattern)
        while i >= 0:
            sites.append((i, i + len(pattern), f"{name} {pattern} ({strand}) at {i + 1}"))
            i = seq.find(pattern, i + 1)
    for m in cc.homopolymer.finditer(seq):
        sites.append((m.start(), m.end(), f"{m.group()[0]}x{m.end() - m.start()} at {m.start() + 1}"))
    return sorted(sites)


def gc_fraction(seq: str) -> float:
    return (seq.count("G") + seq.count("C")) / max(len(seq), 1)


def violation_score(seq: str, cc: CompiledConstraints) -> float:
    """Graded violations: sites plus GC percentage points outside the window (0 means feasible)."""
    gc = gc_fraction(seq)
    return len(_sites(seq, cc)) + 100.0 * max(cc.gc_min - gc, gc - cc.gc_max, 0.0)


def constraint_report(cds: str, protein: str, constraints: DesignConstraints) -> ConstraintReport:
    """Every constraint with pass/fail and details. ``protein`` is what the CDS must encode (no stop); the
    start codon is read as Met whatever it is (as the initiator tRNA does)."""
    cc = compile_constraints(constraints)
    cds = cds.upper()
    checks: dict[str, ConstraintCheck] = {}
    ok_alphabet = bool(cds) and not set(cds) - set("ACGT") and len(cds) % 3 == 0
    checks["alphabet"] = ConstraintCheck(ok_alphabet,
                                         f"{len(cds)} nt" + ("" if ok_alphabet else ", not whole A/C/G/T codons"))
    codons = [cds[i:i + 3] for i in range(0, len(cds) - len(cds) % 3, 3)]
    checks["start_codon"] = ConstraintCheck(bool(codons) and codons[0] == constraints.start_codon,
                                            f"{codons[0] if codons else ''} (want {constraints.start_codon})")
    last = codons[-1] if codons else ""
    want_stop = constraints.stop_codon or "any stop"
    checks["stop_codon"] = ConstraintCheck(CODON_TO_AA.get(last) == "*" and last == (constraints.stop_codon or last),
                                           f"{last} (want {want_stop})")
    internal = [i + 1 for i, c in enumerate(codons[:-1]) if CODON_TO_AA.get(c) == "*"]
    checks["no_internal_stop"] = ConstraintCheck(not internal,
                                                 f"stops at codons {internal[:5]}" if internal else "none")
    encoded = "M" + "".join(CODON_TO_AA.get(c, "X") for c in codons[1:-1]) if len(codons) >= 2 else ""
    same = encoded == protein
    first_diff = next((i + 1 for i, (a, b) in enumerate(zip(encoded, protein)) if a != b),
                      min(len(encoded), len(protein)) + 1)
    checks["back_translation"] = ConstraintCheck(
        same, "exact" if same else f"differs at residue {first_diff} ({len(encoded)} vs {len(protein)} aa)")
    sites = _sites(cds, cc) if ok_alphabet else []
    motifs = [s[2] for s in sites if "(" in s[2]]
    runs = [s[2] for s in sites if "(" not in s[2]]
    checks["forbidden_motifs"] = ConstraintCheck(not motifs, "; ".join(motifs[:10]) or "none on either strand")
    longest = max((len(m.group()) for m in re.finditer(r"A+|C+|G+|T+", cds)), default=0)
    checks["homopolymer"] = ConstraintCheck(not runs, f"longest run {longest} (max {constraints.max_homopolymer})"
                                            + (f": {'; '.join(runs[:5])}" if runs else ""))
    gc = gc_fraction(cds)
    checks["gc_window"] = ConstraintCheck(cc.gc_min <= gc <= cc.gc_max,
                                          f"GC {gc:.3f} (window {cc.gc_min:.3f}-{cc.gc_max:.3f})")
    return ConstraintReport(checks)


def is_feasible(cds: str, protein: str, constraints: DesignConstraints) -> bool:
    return constraint_report(cds, protein, constraints).feasible


# ---------------------------------------------------------------------------------------------------------
# Whole sample batches (the optimiser).


def scan_batch(data: np.ndarray, offsets: np.ndarray,
               cc: CompiledConstraints) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a whole batch buffer: (graded violations per record, GC per record, byte mask of violating sites).

    Motifs are found as 2-bit k-mer codes over the whole buffer, grown one base at a time (so every motif
    length shares the passes) and looked up in a table (N positions masked out first, for degenerate
    motifs); hits are rare, so only they are checked for straddling two records. Runs are windows of
    ``run`` bases whose neighbours are all equal.
    """
    base, _ = base_codes(data)
    n, lengths = len(data), np.diff(offsets)
    n_rec = len(lengths)
    count = np.zeros(n_rec)
    mark = np.zeros(n + 1, dtype=np.int64)

    def add_hits(hit: np.ndarray, k: int, weight: np.ndarray | int = 1) -> None:
        rec = np.searchsorted(offsets, hit, side="right") - 1
        inside = hit + k <= offsets[rec + 1]
        hit, rec = hit[inside], rec[inside]
        np.add.at(count, rec, weight if np.ndim(weight) == 0 else weight[inside])
        np.add.at(mark, hit, 1)  # few hits: cheaper than a bincount over the whole buffer
        np.add.at(mark, hit + k, -1)

    longest = cc.max_motif_length
    kmer = np.zeros(n, dtype=np.uint32 if longest <= 16 else np.uint64)
    for k in range(1, longest + 1):
        if n < k:
            break
        head = kmer[:n - k + 1]  # head[i]: code of bases i..i+k-1
        head *= 4
        head += base[k - 1:]
        for g in cc.kmer_groups:
            if g.k != k:
                continue
            key = head & head.dtype.type(g.mask) if g.masked else head
            single = g.weights.max() == 1  # no k-mer of two patterns: a hit counts once
            if k <= 10:
                table = np.zeros(4**k, dtype=bool if single else np.int64)
                table[g.codes] = True if single else g.weights
                hit = np.flatnonzero(table[key])
                weight = 1 if single else table[key[hit]]
            else:
                hit = np.flatnonzero(np.isin(key, g.codes.astype(head.dtype)))
                weight = 1 if single else g.weights[np.searchsorted(g.codes, key[hit].astype(np.uint64))]
            add_hits(hit, k, weight)
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
    cc = compile_constraints(constraints)
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
                    key = (n_sites(trial), -(logw[codon_index(alt)] - logw[codon_index(codons[i])]))
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
        gc = gc_fraction(seq)
        if cc.gc_min <= gc <= cc.gc_max:
            break
        direction = 1 if gc < cc.gc_min else -1
        moves = []
        for i in editable:
            g0 = GC_PER_CODON[codon_index(codons[i])]
            for alt in alts[i]:
                dg = (GC_PER_CODON[codon_index(alt)] - g0) * direction
                if dg > 0:
                    moves.append(((logw[codon_index(codons[i])] - logw[codon_index(alt)]) / dg, i, alt))
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
            gc = gc_fraction("".join(codons))
            if cc.gc_min <= gc <= cc.gc_max:
                break
        seq = "".join(codons)
        if not _sites(seq, cc) and cc.gc_min <= gc_fraction(seq) <= cc.gc_max:
            break
    return seq
