"""Surrogate-guided, host-specific CDS design: one call designs every protein of a host, under the hard
constraints of ``design_constraints``, with the policy optimiser of ``design_policy``, and scores each design
against baselines.

Reward = mu - lam * sigma + eta * avg_loglik (host Markov model, nats per base) for a feasible CDS. A
protein's design is the better feasible of the policy's best sample and the final policy's most likely CDS
(repaired); it is compared with the host's preferred codon at every position, the best of a group of random
synonymous CDS (both repaired) and, where given, the native CDS, all scored in one surrogate call.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa

from codon_assets.core.codon_metrics import geometric_mean_index
from codon_assets.core.design_constraints import (
    ConstraintReport,
    DesignConstraints,
    compile_constraints,
    constraint_report,
    gc_fraction,
    is_feasible,
    preferred_stop,
    iupac_reverse_complement,
    motif_regex,
    repair_cds,
    violation_score,
)
from codon_assets.core.design_policy import (
    BatchScores,
    codon_batch,
    host_log_frequencies,
    optimise,
    random_synonyms,
)
from codon_assets.core.design_settings import OptimiserSettings
from codon_assets.core.genetic_code import CODON_TO_AA, CODONS, SYNONYMS
from codon_assets.core.markov import MarkovCdsModel
from codon_assets.core.proteins import AMINO_ACIDS, ProteinRecord
from codon_assets.core.sequence_stats import codon_counts
from codon_assets.core.surrogate import SurrogateModel


@dataclass(frozen=True)
class ScoredCds:
    """A CDS of the protein with its scores, and whether it meets every constraint."""

    cds: str
    mu: float
    sigma: float
    avg_loglik: float  # host Markov model, nats per base
    reward: float  # mu - lam * sigma + eta * avg_loglik
    feasible: bool


@dataclass(frozen=True)
class Gain:
    """How far a design scores above another CDS of the same protein."""

    reward: float
    mu: float


@dataclass(frozen=True)
class DesignRun:
    """What one ``design_proteins`` call ran with and cost; the same for each of its designs."""

    host: str
    settings: OptimiserSettings
    surrogate_calls: int
    sequences_scored: int
    seconds: float
    forbidden_motifs: tuple[tuple[str, str], ...] = ()  # (name, IUPAC motif) avoided on both strands


@dataclass(frozen=True)
class Design:
    """The designed CDS of one protein, its scores, its constraint report and its baselines."""

    protein_id: str
    protein: str  # what the CDS encodes: the given protein, with Met prepended where it lacked one
    met_added: bool
    cds: str
    source: str  # "sample@step<k>" (the policy's best sample, from step k) or "policy_greedy"
    mu: float
    sigma: float
    avg_loglik: float
    reward: float
    cai: float
    constraints: ConstraintReport
    reward_curve: tuple[float, ...]  # mean penalised reward of the policy's samples, per step (last: final policy)
    infeasible_fraction_curve: tuple[float, ...]  # fraction of the policy's samples that were infeasible, per step
    kl_to_initial: float  # mean KL per position of the final policy to the host-usage policy
    baseline_preferred: ScoredCds  # the host's most used synonym at every position
    baseline_random: ScoredCds  # the best of a group of random synonymous CDS
    native: ScoredCds | None  # the protein's own CDS, where one was given
    run: DesignRun = field(compare=False)  # holds the wall time, which differs between identical designs

    @property
    def length_aa(self) -> int:
        return len(self.protein)

    @property
    def gc(self) -> float:
        return gc_fraction(self.cds)

    @property
    def feasible(self) -> bool:
        return self.constraints.feasible

    @property
    def reward_initial_mean(self) -> float:
        return self.reward_curve[0]

    @property
    def reward_final_mean(self) -> float:
        return self.reward_curve[-1]

    @property
    def infeasible_fraction_initial(self) -> float:
        return self.infeasible_fraction_curve[0]

    @property
    def infeasible_fraction_final(self) -> float:
        return self.infeasible_fraction_curve[-1]

    def gain_over(self, other: ScoredCds) -> Gain:
        return Gain(self.reward - other.reward, self.mu - other.mu)

    @property
    def gain_over_preferred(self) -> Gain:
        return self.gain_over(self.baseline_preferred)

    @property
    def gain_over_random(self) -> Gain:
        return self.gain_over(self.baseline_random)

    @property
    def improvement_over_native(self) -> Gain | None:
        return self.gain_over(self.native) if self.native is not None else None


@dataclass
class _Scorer:
    surrogate: SurrogateModel
    host_key: str
    markov: MarkovCdsModel | None
    lam: float
    eta: float
    calls: int = 0
    scored: int = 0

    def __call__(self, seqs: pa.Array) -> BatchScores:
        """mu, sigma, avg_loglik and reward of a batch, in one surrogate call."""
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
        return BatchScores(mu, sigma, np.asarray(loglik, dtype=float), raw)


def _scorable(cds: str | None) -> bool:
    return bool(cds) and not set(cds.upper()) - set("ACGT") and len(cds) % 3 == 0


def refuse_non_standard_sense_codons(host: str) -> None:
    """Designs back-translate with the standard code's synonymous codons. A host whose table reads a codon
    differently (CTG as Ser in the CTG-clade yeasts) would get CDS encoding another protein: refused, with the
    codons named. Tables that differ only in start codons (11, bacterial) design as the standard one."""
    from codon_assets.core.genetic_code import genetic_code
    from codon_assets.core.hosts import HOSTS_BY_KEY

    if host not in HOSTS_BY_KEY:
        return
    table = HOSTS_BY_KEY[host].translation_table
    differing = {c: aa for c, aa in genetic_code(table).codon_to_aa.items() if CODON_TO_AA[c] != aa}
    if differing:
        shown = ", ".join(f"{c} -> {'stop' if aa == '*' else aa}" for c, aa in sorted(differing.items()))
        raise ValueError(f"host {host} translates with NCBI table {table} ({shown}); designs use the standard "
                         "code's synonymous codons, so they would encode another protein: not supported")


def unavoidable_sites(c: DesignConstraints, proteins: Iterable[str]) -> list[str]:
    """Why each forbidden site that no CDS of ``proteins`` can avoid is unavoidable, one phrase a site: it lies,
    on one strand or the other, within the start or the stop codon or within every codon of an amino acid the
    proteins use. (A site longer than a codon depends on the neighbouring codons: the optimiser judges it.)"""
    used = sorted(set().union(*map(set, proteins)) - {"*"})
    found = []
    for name, motif in c.forbidden_motifs:
        patterns = (motif_regex(motif), motif_regex(iupac_reverse_complement(motif)))

        def within(codon: str) -> bool:
            return any(pattern.search(codon) for pattern in patterns)

        label = name if name == motif else f"{name} ({motif})"
        fixed = [f"the {role} codon {codon}" for role, codon in (("start", c.start_codon), ("stop", c.stop_codon))
                 if codon and within(codon)]
        every = [f"every codon of {aa} ({', '.join(CODONS[i] for i in SYNONYMS[aa])})" for aa in used
                 if aa in SYNONYMS and all(within(CODONS[i]) for i in SYNONYMS[aa])]
        if fixed or every:
            found.append(f"{label}: it lies within {(fixed + every)[0]}")
    return found


def design_proteins(
    proteins: Sequence[ProteinRecord],
    host: str,
    surrogate: SurrogateModel,
    markov: MarkovCdsModel | None,
    host_codon_counts: np.ndarray,
    constraints: DesignConstraints | None = None,
    settings: OptimiserSettings = OptimiserSettings(),
    natives: Mapping[str, str] | None = None,
) -> list[Design]:
    """Design one CDS per protein for the host with key ``host``. ``host_codon_counts`` is the host's
    (records, 64) or summed (64,) codon counts: initial policy, preferred-codon baseline and, when
    ``constraints`` is None, the GC window and preferred stop. ``markov`` scores the eta term (None: the
    surrogate's own Markov model of the host). ``natives`` (CDS by protein id) adds to, and overrides, the
    records' own native CDS. Deterministic for a given ``settings.seed``.

    Forbidden sites: those of ``settings`` (``avoid_motifs`` and ``avoid_enzymes``), added to those of
    ``constraints``; with ``constraints`` None, those of ``settings`` alone."""
    t0 = time.perf_counter()
    refuse_non_standard_sense_codons(host)
    if host not in surrogate.markov_models:
        raise ValueError(f"the surrogate has no Markov model for host {host!r}: set surrogate.markov_models[{host!r}]")
    c = (constraints or DesignConstraints.for_host(host_codon_counts, forbidden_motifs=())).with_settings(settings)
    if c.stop_codon is None:
        c = replace(c, stop_codon=preferred_stop(host_codon_counts))
    if CODON_TO_AA.get(c.stop_codon) != "*":
        raise ValueError(f"stop codon {c.stop_codon!r} is not a stop")
    cc = compile_constraints(c)
    if not proteins:
        return []
    native_by_id = {**{r.protein_id: r.native_cds for r in proteins if r.native_cds}, **(natives or {})}
    for r in proteins:
        if not r.protein or set(r.protein) - AMINO_ACIDS:
            raise ValueError(f"protein {r.protein_id!r}: empty or not the 20 standard amino acids "
                             "(read it with read_proteins)")
    effective = [r.protein if r.protein.startswith("M") else "M" + r.protein for r in proteins]  # CDS start with Met
    if unavoidable := unavoidable_sites(c, effective):
        raise ValueError("no design can avoid the forbidden site " + "; ".join(unavoidable))
    logfreq = host_log_frequencies(host_codon_counts)
    b = codon_batch(effective, logfreq, c.start_codon, c.stop_codon)
    score = _Scorer(surrogate, host, markov, settings.lam, settings.eta)
    rng = np.random.default_rng(settings.seed)
    policy = optimise(b, cc, score, settings, rng)

    # Final candidates and baselines, all scored in one call.
    def repaired(seq: str) -> str:
        return seq if violation_score(seq, cc) == 0 else repair_cds(seq, c, logfreq)

    n_prot, group = len(proteins), settings.group
    greedy = [repaired(x) for x in b.most_likely_cds(policy.final_logp)]
    preferred = [repaired(x) for x in b.most_likely_cds(b.z0)]
    randoms = [repaired(x) for x in random_synonyms(b, cc, settings, rng)]
    native_cds = {p: native_by_id[r.protein_id].upper() for p, r in enumerate(proteins)
                  if _scorable(native_by_id.get(r.protein_id))}
    # Batch layout: greedy [P], preferred [P], random [P * G, protein-major], then the natives there are.
    native_at = {p: 2 * n_prot + n_prot * group + k for k, p in enumerate(native_cds)}
    batch = greedy + preferred + randoms + list(native_cds.values())
    scored = score(pa.array(batch, pa.string()))

    def scored_cds(i: int, protein: str) -> ScoredCds:
        return ScoredCds(batch[i], float(scored.mu[i]), float(scored.sigma[i]), float(scored.avg_loglik[i]),
                         float(scored.reward[i]), is_feasible(batch[i], protein, c))

    def better(cds: ScoredCds) -> tuple[bool, float]:
        return cds.feasible, cds.reward

    run = DesignRun(host, settings, score.calls, score.scored, round(time.perf_counter() - t0, 3),
                    tuple(c.forbidden_motifs))
    cai_weights = surrogate.builders[host].cai_weights
    designs = []
    for p, record in enumerate(proteins):
        protein = effective[p]
        # The optimiser's design: the better feasible of its best sample and its final greedy (repaired) CDS.
        candidates = []
        if (best := policy.best[p]) is not None:
            candidates.append((ScoredCds(best.cds, best.mu, best.sigma, best.avg_loglik, best.reward,
                                         is_feasible(best.cds, protein, c)), f"sample@step{best.step}"))
        candidates.append((scored_cds(p, protein), "policy_greedy"))
        chosen, source = max(candidates, key=lambda candidate: better(candidate[0]))
        random_best = max((scored_cds(2 * n_prot + p * group + g, protein) for g in range(group)), key=better)
        designs.append(Design(
            protein_id=record.protein_id,
            protein=protein,
            met_added=protein != record.protein,
            cds=chosen.cds,
            source=source,
            mu=chosen.mu,
            sigma=chosen.sigma,
            avg_loglik=chosen.avg_loglik,
            reward=chosen.reward,
            cai=float(geometric_mean_index(codon_counts(pa.array([chosen.cds])), cai_weights)[0]),
            constraints=constraint_report(chosen.cds, protein, c),
            reward_curve=tuple(float(v) for v in policy.reward_curve[:, p]),
            infeasible_fraction_curve=tuple(float(v) for v in policy.infeasible_fraction[:, p]),
            kl_to_initial=float(policy.kl_to_initial[p]),
            baseline_preferred=scored_cds(n_prot + p, protein),
            baseline_random=random_best,
            native=scored_cds(native_at[p], protein) if p in native_at else None,
            run=run,
        ))
    return designs


def design_summary(designs: list[Design]) -> dict[str, float | int | None]:
    """Means over proteins of the gains of the designs over both baselines (and over natives where given)."""
    if not designs:
        return {"n_proteins": 0}

    def mean(values: list[float]) -> float | None:
        return float(np.mean(values)) if values else None

    natives = [d.improvement_over_native for d in designs if d.improvement_over_native is not None]
    return {
        "n_proteins": len(designs),
        "n_feasible": sum(d.feasible for d in designs),
        "mean_reward": mean([d.reward for d in designs]),
        "mean_mu": mean([d.mu for d in designs]),
        "mean_reward_gain_over_preferred": mean([d.gain_over_preferred.reward for d in designs]),
        "mean_reward_gain_over_random": mean([d.gain_over_random.reward for d in designs]),
        "mean_mu_gain_over_preferred": mean([d.gain_over_preferred.mu for d in designs]),
        "mean_mu_gain_over_random": mean([d.gain_over_random.mu for d in designs]),
        "mean_reward_gain_over_native": mean([x.reward for x in natives]),
        "mean_mu_gain_over_native": mean([x.mu for x in natives]),
        "n_with_native": len(natives),
        "mean_initial_policy_reward": mean([d.reward_initial_mean for d in designs]),
        "mean_final_policy_reward": mean([d.reward_final_mean for d in designs]),
    }
