"""The settings of a CDS design run and their defaults, defined here once. A module of its own, so that the
command line and the Dagster config take their defaults from it without importing the optimiser."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OptimiserSettings:
    """Every setting of a design run (the Dagster config and the command line take their defaults from
    here)."""

    steps: int = 40  # policy-gradient steps
    group: int = 16  # CDS sampled per protein and step
    seed: int = 0
    lam: float = 0.5  # weight of sigma in the reward: mu - lam * sigma + eta * avg_loglik
    eta: float = 1.0  # weight of the Markov naturalness term
    kl_beta: float = 0.05  # weight of KL(pi || pi_initial) per position
    lr_shared: float = 0.1  # Adam step for the per-codon logits shared along the protein
    lr_local: float = 0.03  # Adam step for the per-position offsets (noisier: smaller)
    ppo_epochs: int = 4  # updates per sampled group (ratios depart from 1 after the first)
    clip_eps: float = 0.2
    repair_rounds: int = 3  # on-policy redraws of codons under a violation, per sample
    penalty_margin: float = 0.5
    repair_samples: bool = True  # False: the policy's samples keep their violations (only the penalty steers)
