"""The settings of a CDS design run and their defaults, defined here once. A module of its own, so that the
command line and the Dagster config take their defaults from it without importing the optimiser.

Forbidden sites come from two settings, and a run avoids both on either strand: ``avoid_motifs``, IUPAC
motifs ("GGTNACC", or named "BstEII=GGTNACC"; by default the eight motifs below), and ``avoid_enzymes``,
restriction enzymes by their REBASE name, whose recognition sites are looked up in ``Bio.Restriction``
(imported only when an enzyme is named, so that building settings stays cheap).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import lru_cache

# The sites every design avoids unless told otherwise (both strands). Kept as named motifs rather than
# enzymes so that the forbidden patterns, their labels in the constraint report, and so the designs, are
# exactly those of the runs made before enzymes could be named.
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

# IUPAC nucleotide codes: the bases each letter stands for.
IUPAC_BASES: dict[str, str] = {
    "A": "A", "C": "C", "G": "G", "T": "T",
    "R": "AG", "Y": "CT", "S": "CG", "W": "AT", "K": "GT", "M": "AC",
    "B": "CGT", "D": "AGT", "H": "ACT", "V": "ACG", "N": "ACGT",
}
MAX_MOTIF_LENGTH = 32  # the optimiser codes a motif as one 64-bit k-mer (2 bits a base)
MAX_MOTIF_EXPANSIONS = 4096  # concrete k-mers a motif may stand for, its N positions aside
_NAME = re.compile(r"[A-Za-z0-9_.+-]+")


class SettingsError(ValueError):
    """A design setting that cannot be used (an unknown enzyme, a malformed motif); the message is meant
    for the user as is."""


def motif_expansions(motif: str) -> int:
    """How many concrete k-mers ``motif`` stands for once its N positions are masked out (the optimiser
    matches N as "any base" without expanding it)."""
    count = 1
    for letter in motif:
        if letter != "N":
            count *= len(IUPAC_BASES[letter])
    return count


def parse_motif(text: str) -> tuple[str, str]:
    """(name, upper-case motif) of "MOTIF" or "NAME=MOTIF"; a bare motif is named after itself."""
    name, sep, motif = text.strip().partition("=")
    if not sep:
        name, motif = "", name
    name, motif = name.strip(), motif.strip().upper()
    where = f"forbidden motif {text.strip()!r}"
    if not motif:
        raise SettingsError(f"{where}: empty motif (write MOTIF or NAME=MOTIF)")
    bad = sorted(set(motif) - set(IUPAC_BASES))
    if bad:
        raise SettingsError(f"{where}: {''.join(bad)} not IUPAC nucleotide codes (A C G T R Y S W K M B D H V N)")
    if len(motif) > MAX_MOTIF_LENGTH:
        raise SettingsError(f"{where}: longer than {MAX_MOTIF_LENGTH} bases")
    if set(motif) == {"N"}:
        raise SettingsError(f"{where}: only N, it would match everywhere")
    if motif_expansions(motif) > MAX_MOTIF_EXPANSIONS:
        raise SettingsError(f"{where}: too degenerate ({motif_expansions(motif)} concrete sequences besides its "
                            f"N positions; at most {MAX_MOTIF_EXPANSIONS})")
    if sep and not _NAME.fullmatch(name):
        raise SettingsError(f"{where}: the name must be letters, digits or _ . + - (no spaces)")
    return name or motif, motif


@lru_cache(maxsize=1)
def _enzyme_sites() -> dict[str, str]:
    """Recognition site of every REBASE enzyme Biopython knows, by name."""
    from Bio.Restriction import AllEnzymes

    return {str(enzyme): enzyme.site for enzyme in AllEnzymes}


def resolve_enzymes(names: tuple[str, ...] | list[str]) -> tuple[tuple[str, str], ...]:
    """(REBASE name, recognition site) per enzyme name, one pair per site where REBASE lists alternatives
    ("TNGGNAG|GTGGNAG"). A name is matched exactly, else ignoring case when that is unambiguous ("bsai" ->
    BsaI); every unknown name is reported in one SettingsError, with close matches."""
    if not names:
        return ()
    sites = _enzyme_sites()
    by_lower: dict[str, list[str]] = {}
    for known in sites:
        by_lower.setdefault(known.lower(), []).append(known)
    out, unknown = [], []
    for raw in names:
        name = str(raw).strip()
        if name not in sites and len(by_lower.get(name.lower(), ())) == 1:
            name = by_lower[name.lower()][0]
        if name in sites:
            out += [(name, parse_motif(site)[1]) for site in sites[name].split("|")]
        else:
            close = difflib.get_close_matches(name.lower(), list(by_lower), n=4, cutoff=0.6)
            hint = f" (did you mean {', '.join(k for c in close for k in by_lower[c])}?)" if close else ""
            unknown.append(f"{name!r}{hint}")
    if unknown:
        raise SettingsError(f"unknown restriction enzyme{'s' if len(unknown) > 1 else ''} {'; '.join(unknown)}: "
                            "use REBASE names as in Bio.Restriction, e.g. BsaI, BsmBI, EcoRI")
    return tuple(dict.fromkeys(out))


# Beyond these a design run would not end in a working day or not fit in memory (group x protein length x 64
# logits per step): a typo, not a setting.
MAX_STEPS = 10_000
MAX_GROUP = 1_024


@dataclass(frozen=True)
class OptimiserSettings:
    """Every setting of a design run (the Dagster config and the command line take their defaults from
    here). Lists may be given as any sequence; they are kept as tuples. Enzyme names and motifs are
    checked when the settings are made: a bad one raises ``SettingsError`` before any work."""

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
    # Restriction enzymes (REBASE names, e.g. BsaI, BsmBI) whose sites are avoided on both strands; names
    # are stored as REBASE spells them.
    avoid_enzymes: tuple[str, ...] = ()
    # Motifs avoided on both strands, "MOTIF" or "NAME=MOTIF" with IUPAC codes; () avoids none of them.
    avoid_motifs: tuple[str, ...] = tuple(f"{name}={motif}" for name, motif in DEFAULT_MOTIFS.items())

    def __post_init__(self) -> None:
        for name, low, high in (("steps", 1, MAX_STEPS), ("group", 1, MAX_GROUP), ("seed", 0, 2**63 - 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise SettingsError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
        for name in ("avoid_enzymes", "avoid_motifs"):
            value = getattr(self, name)
            if isinstance(value, str):  # one name, not its letters
                value = (value,)
            object.__setattr__(self, name, tuple(str(v) for v in value))
        for text in self.avoid_motifs:
            parse_motif(text)
        canonical = tuple(dict.fromkeys(name for name, _ in resolve_enzymes(self.avoid_enzymes)))
        object.__setattr__(self, "avoid_enzymes", canonical)

    def forbidden_sites(self) -> tuple[tuple[str, str], ...]:
        """(name, IUPAC motif) of every site to avoid: the motifs, then the enzymes' REBASE sites; each
        pair once."""
        pairs = [parse_motif(text) for text in self.avoid_motifs] + list(resolve_enzymes(self.avoid_enzymes))
        return tuple(dict.fromkeys(pairs))
