"""Deterministic generator of realistic host tables in the release layout, for tests and benchmarks.

    python bench/generate.py --host S_cerevisiae --rows 52000 --output /tmp/Sac.tsv [--seed 0]

Proteins have a proteome-like length distribution (log-normal, mean about 400 aa, so CDS of about 1.2 kb)
and amino-acid composition; each residue's codon is drawn from the host's codon usage: counted from the
host's bundled real sample in examples/data where there is one, else (hosts without bundled data) a
synonymous choice biased by the host's typical third-position GC. A few percent of rows are deliberately
bad, spread over every reject kind the converter knows, so a benchmark exercises the reject paths too.
The same arguments always give the same bytes.

Beside the table goes ``<stem>_measured.tsv``: a SYNTHETIC measured table (nothing in it was measured; its
value column is named ``synthetic_level_not_measured``), so the surrogate stage, which trains on measured
labels only, has labels for every good row. Each value is a hidden function of the row's CDS (how often it
uses the host's preferred codons, its GC3 and its length) plus noise, so a model that reads the sequence
can learn it and cross-validation measures something. The noise has its own random stream: the table's
bytes are the same with or without the labels.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codon_assets.core.convert import FASTA_HEADER_REASONS, REASONS  # noqa: E402
from codon_assets.core.genetic_code import CODONS, CODON_TO_AA, STANDARD_TABLE  # noqa: E402
from codon_assets.core.hosts import Host, get_host  # noqa: E402
from codon_assets.core.tsv import RELEASE_COLUMNS, read_release_table  # noqa: E402

# Average amino-acid composition of proteomes (UniProtKB/Swiss-Prot release statistics, percent).
AA_COMPOSITION = {
    "A": 8.25, "R": 5.53, "N": 4.06, "D": 5.45, "C": 1.37, "Q": 3.93, "E": 6.75, "G": 7.07, "H": 2.27,
    "I": 5.96, "L": 9.66, "K": 5.84, "M": 2.42, "F": 3.86, "P": 4.70, "S": 6.56, "T": 5.34, "W": 1.08,
    "Y": 2.92, "V": 6.87,
}
# Third-position GC of hosts without a bundled sample (approximate genome-wide GC3).
HOST_GC3 = {"E_coli": 0.55, "Human": 0.60, "Mouse": 0.58, "S_cerevisiae": 0.38, "P_pastoris": 0.42}
LOCATIONS = (
    "SUBCELLULAR LOCATION: Cytoplasm.",
    "SUBCELLULAR LOCATION: Cytoplasm, cytosol.",
    "SUBCELLULAR LOCATION: Nucleus.",
    "SUBCELLULAR LOCATION: Mitochondrion.",
    "SUBCELLULAR LOCATION: Membrane; Multi-pass membrane protein.",
    "SUBCELLULAR LOCATION: Endoplasmic reticulum membrane; Single-pass membrane protein.",
    "SUBCELLULAR LOCATION: Secreted.",
    "SUBCELLULAR LOCATION: Cytoplasm. Note=Associated with the ribosome.",
    "",
)
# Every reason a release TSV row can have (malformed rows are written with a missing field; a pseudogene or a
# partial CDS is only marked in a CDS FASTA header).
BAD_KINDS = tuple(reason for reason in REASONS if reason not in FASTA_HEADER_REASONS)
CHUNK_ROWS = 20_000
# The hidden function of the synthetic labels (log10 level = LABEL_MEAN + LABEL_SD * score, score a weighted
# sum of z-scored sequence traits plus unit noise): codon adaptiveness dominates, as in real expression data.
LABEL_MEAN, LABEL_SD = 1.5, 0.5
LABEL_WEIGHTS = {"adaptiveness": 1.0, "gc3": 0.3, "log_length": -0.4, "noise": 0.6}
MEASURED_HEADER = "protein_id\tsynthetic_level_not_measured\n"


def measured_path(output: Path) -> Path:
    """Where ``generate`` writes the synthetic measured table of ``output``: ``<stem>_measured.tsv``."""
    return output.with_name(f"{output.stem}_measured.tsv")


def synthetic_traits(codons: np.ndarray, bounds: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Per record (codon indices ``codons``, record j being codons[bounds[j]:bounds[j + 1]]): mean log
    relative adaptiveness of its codons under the host's usage ``weights``, GC3 and log length."""
    w = np.empty(64)
    for codons_of_aa in _synonyms().values():
        w[codons_of_aa] = weights[codons_of_aa] / weights[codons_of_aa].max()
    lengths = np.diff(bounds)
    gc3 = np.array([c[2] in "GC" for c in CODONS], dtype=np.float64)
    return {"adaptiveness": np.add.reduceat(np.log(w)[codons], bounds[:-1]) / lengths,
            "gc3": np.add.reduceat(gc3[codons], bounds[:-1]) / lengths,
            "log_length": np.log(lengths)}


def _synonyms() -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, codon in enumerate(CODONS):
        out.setdefault(CODON_TO_AA[codon], []).append(i)
    return out


def synthetic_log10_level(traits: dict[str, np.ndarray], noise: np.ndarray,
                          reference: dict[str, tuple[float, float]]) -> np.ndarray:
    """The hidden function: LABEL_MEAN + LABEL_SD * (sum of weighted z-scored traits + weighted noise);
    ``reference`` holds each trait's (mean, sd) so that every chunk is scaled alike."""
    score = LABEL_WEIGHTS["noise"] * noise
    for name, (mean, sd) in reference.items():
        score = score + LABEL_WEIGHTS[name] * (traits[name] - mean) / sd
    return LABEL_MEAN + LABEL_SD * score


def host_codon_weights(host: Host) -> np.ndarray:
    """Relative weight of each of the 64 codons (in CODONS order) for this host."""
    sample = next((p for p in (ROOT / "examples" / "data").glob("*.tsv")
                   if p.name.lower() in {a.lower() for a in host.file_aliases}), None)
    if sample is not None:
        counts = dict.fromkeys(CODONS, 1.0)
        for cds in read_release_table(sample).table["RefSeq_nn"].to_pylist():
            cds = cds.strip().upper()
            for k in range(0, len(cds) - len(cds) % 3, 3):
                if cds[k : k + 3] in counts:
                    counts[cds[k : k + 3]] += 1
        return np.array([counts[c] for c in CODONS])
    gc3 = HOST_GC3[host.key]
    return np.array([gc3 if c[2] in "GC" else 1 - gc3 for c in CODONS])


def codon_sampler(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """Per amino acid: cumulative probabilities over its codons, and the codon indices."""
    amino_acids = sorted(AA_COMPOSITION)
    by_aa = [[i for i, c in enumerate(CODONS) if CODON_TO_AA[c] == aa] for aa in amino_acids]
    max_syn = max(len(c) for c in by_aa)
    cumulative = np.ones((len(amino_acids), max_syn))
    for a, codons in enumerate(by_aa):
        p = weights[codons] / weights[codons].sum()
        cumulative[a, : len(codons)] = np.cumsum(p)
    aa_p = np.array([AA_COMPOSITION[a] for a in amino_acids])
    return cumulative, aa_p / aa_p.sum(), by_aa


PILOT_RECORDS = 4_000  # records drawn (from their own stream) to scale the synthetic labels' traits


class _Sampler:
    """Draws proteins and their codons from the host's usage: lengths, amino acids, codons per residue."""

    def __init__(self, weights: np.ndarray):
        self.cumulative, self.aa_p, by_aa = codon_sampler(weights)
        self.lookup = np.full((len(by_aa), self.cumulative.shape[1]), 0, dtype=np.int64)
        for a, codons in enumerate(by_aa):
            self.lookup[a, : len(codons)] = codons
            self.lookup[a, len(codons):] = codons[-1]

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(amino-acid indices, codon indices, bounds): record j is [bounds[j], bounds[j + 1]); each starts
        with Met."""
        lengths = np.clip(rng.lognormal(5.8, 0.6, n).astype(np.int64), 30, 5000)
        total = int(lengths.sum())
        aa_idx = rng.choice(len(self.aa_p), size=total, p=self.aa_p)
        pick = (rng.random(total)[:, None] > self.cumulative[aa_idx]).sum(axis=1)
        codons = self.lookup[aa_idx, pick]
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        codons[bounds[:-1]] = CODONS.index("ATG")
        aa_idx[bounds[:-1]] = sorted(AA_COMPOSITION).index("M")
        return aa_idx, codons, bounds


def label_reference(sampler: _Sampler, weights: np.ndarray, seed: int) -> dict[str, tuple[float, float]]:
    """(mean, sd) of each trait over PILOT_RECORDS records from their own stream: the same scaling for every
    table size, so the hidden function depends on the host and seed only."""
    _, codons, bounds = sampler.draw(np.random.default_rng([seed, 2]), PILOT_RECORDS)
    return {k: (float(v.mean()), float(v.std()) or 1.0) for k, v in synthetic_traits(codons, bounds, weights).items()}


def generate(host_key: str, rows: int, output: Path, seed: int = 0, bad_fraction: float = 0.03,
             measured: bool = True) -> dict[str, int]:
    """Write the table (and, with ``measured``, its synthetic measured table at ``measured_path``);
    returns how many rows of each bad kind were planted."""
    host = get_host(host_key)
    rng = np.random.default_rng(seed)
    label_rng = np.random.default_rng([seed, 1])  # its own stream: the table's bytes do not depend on it
    weights = host_codon_weights(host)
    sampler = _Sampler(weights)
    reference = label_reference(sampler, weights, seed) if measured else {}
    codon_bytes = np.frombuffer("".join(CODONS).encode(), dtype=np.uint8).reshape(64, 3)
    aa_letters = np.frombuffer("".join(sorted(AA_COMPOSITION)).encode(), dtype=np.uint8)
    stops = [i for i, c in enumerate(CODONS) if STANDARD_TABLE[i] == "*"]

    kinds = rng.choice(len(BAD_KINDS) + 1, size=rows,
                       p=[1 - bad_fraction] + [bad_fraction / len(BAD_KINDS)] * len(BAD_KINDS))
    planted = {kind: int((kinds == k + 1).sum()) for k, kind in enumerate(BAD_KINDS)}
    organism = host.species[0] if host.species else host.display_name
    previous_cds, previous_aa = "ATGTAA", "M"
    with ExitStack() as files:
        out = files.enter_context(open(output, "w", encoding="utf-8", errors="surrogateescape", newline="\n"))
        out.write("\t".join(RELEASE_COLUMNS) + "\n")
        labels = files.enter_context(open(measured_path(output), "w", encoding="utf-8", newline="\n")) if measured else None
        if labels:
            labels.write(MEASURED_HEADER)
        for start in range(0, rows, CHUNK_ROWS):
            n = min(CHUNK_ROWS, rows - start)
            aa_idx, codons, bounds = sampler.draw(rng, n)
            cds_all = codon_bytes[codons].tobytes().decode()
            aa_all = aa_letters[aa_idx].tobytes().decode()
            stop_choice = rng.choice(stops, size=n)
            reviewed = rng.random(n) < 0.3
            location = rng.integers(0, len(LOCATIONS), n)
            if labels:
                noise = label_rng.standard_normal(n)
                level = synthetic_log10_level(synthetic_traits(codons, bounds, weights), noise, reference)
            for j in range(n):
                i = start + j
                cds = cds_all[3 * bounds[j] : 3 * bounds[j + 1]] + CODONS[stop_choice[j]]
                protein = aa_all[bounds[j] : bounds[j + 1]]
                kind = BAD_KINDS[kinds[i] - 1] if kinds[i] else None
                entry = f"G{host.key[:2].upper()}{i + 1:07d}"
                cds, protein, entry = _spoil(kind, cds, protein, entry, previous_cds, previous_aa, i, rng)
                fields = [entry, "reviewed" if reviewed[j] else "unreviewed", f"GEN{i + 1}_{host.key.upper()}",
                          f"Generated protein {i + 1}", f"gen{i + 1}", organism, str(len(protein)),
                          LOCATIONS[location[j]], f"XP_{i + 1:09d}.1" if entry else "", "", cds, protein + "*"]
                if kind == "malformed_row":
                    fields = fields[:-1]
                out.write("\t".join(fields) + "\n")
                if kind is None:
                    previous_cds, previous_aa = cds, protein
                    if labels:  # good rows only: a rejected row has no record to label
                        labels.write(f"{entry}\t{10 ** level[j]:.6g}\n")
    return planted


def _spoil(kind, cds, protein, entry, previous_cds, previous_aa, i, rng):
    """Turn a good row into one that must be rejected for ``kind``."""
    middle = 3 * (len(protein) // 2)
    if kind == "missing_id":
        entry = ""
    elif kind == "missing_sequence":
        cds = ""
    elif kind == "non_acgt":
        cds = cds[:middle] + "N" + cds[middle + 1 :]
    elif kind == "length_not_multiple_of_3":
        cds = cds[:middle] + cds[middle + 1 :]
    elif kind == "no_start_codon":
        cds = "CCC" + cds[3:]
        protein = "P" + protein[1:]
    elif kind == "no_stop_codon":
        cds = cds[:-3] + "TGG"
        protein = protein + "W"
    elif kind == "internal_stop":
        cds = cds[:middle] + "TAA" + cds[middle + 3 :]
    elif kind == "translation_mismatch":
        k = len(protein) // 2
        protein = protein[:k] + ("A" if protein[k] != "A" else "G") + protein[k + 1 :]
    elif kind == "protein_length_out_of_bounds":
        cds, protein = "ATGAAATAA", "MK"
    elif kind == "duplicate_id":
        entry = "GDUPLICATE"  # the first such row is kept; every later one shares its id
        cds = cds[:3] + "".join(rng.choice(["GCT", "GCC"], size=len(protein) - 1)) + cds[-3:]
        protein = "M" + "A" * (len(protein) - 1)
    elif kind == "duplicate_sequence":
        cds, protein = previous_cds, previous_aa
    elif kind == "not_utf8":
        entry += "\udcff"  # written as the lone byte 0xff (surrogateescape): an id that is not UTF-8
    return cds, protein, entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="S_cerevisiae")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bad-fraction", type=float, default=0.03)
    parser.add_argument("--no-measured", action="store_true", help="do not write the synthetic measured table")
    args = parser.parse_args()
    planted = generate(args.host, args.rows, args.output, args.seed, args.bad_fraction, measured=not args.no_measured)
    print(f"wrote {args.rows} rows to {args.output}; planted bad rows: {planted}")
    if not args.no_measured:
        print(f"synthetic (not measured) labels for the good rows: {measured_path(args.output)}")


if __name__ == "__main__":
    main()
