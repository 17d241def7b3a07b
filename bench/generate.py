"""Deterministic generator of realistic host tables in the release layout, for tests and benchmarks.

    python bench/generate.py --host S_cerevisiae --rows 52000 --output /tmp/Sac.tsv [--seed 0]

Proteins have a proteome-like length distribution (log-normal, mean about 400 aa, so CDS of about 1.2 kb)
and amino-acid composition; each residue's codon is drawn from the host's codon usage: counted from the
host's bundled real sample in examples/data where there is one, else (hosts without bundled data) a
synonymous choice biased by the host's typical third-position GC. A few percent of rows are deliberately
bad, spread over every reject kind the converter knows, so a benchmark exercises the reject paths too.
The same arguments always give the same bytes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codon_assets.core.convert import REASONS  # noqa: E402
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
# Every reject kind except malformed rows, which are written as a row with a missing field.
BAD_KINDS = tuple(REASONS)
CHUNK_ROWS = 20_000


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


def generate(host_key: str, rows: int, output: Path, seed: int = 0, bad_fraction: float = 0.03) -> dict[str, int]:
    """Write the table; returns how many rows of each bad kind were planted."""
    host = get_host(host_key)
    rng = np.random.default_rng(seed)
    cumulative, aa_p, by_aa = codon_sampler(host_codon_weights(host))
    codon_bytes = np.frombuffer("".join(CODONS).encode(), dtype=np.uint8).reshape(64, 3)
    aa_letters = np.frombuffer("".join(sorted(AA_COMPOSITION)).encode(), dtype=np.uint8)
    codon_lookup = np.full((len(by_aa), cumulative.shape[1]), 0, dtype=np.int64)
    for a, codons in enumerate(by_aa):
        codon_lookup[a, : len(codons)] = codons
        codon_lookup[a, len(codons):] = codons[-1]
    stops = [i for i, c in enumerate(CODONS) if STANDARD_TABLE[i] == "*"]
    atg = CODONS.index("ATG")

    kinds = rng.choice(len(BAD_KINDS) + 1, size=rows,
                       p=[1 - bad_fraction] + [bad_fraction / len(BAD_KINDS)] * len(BAD_KINDS))
    planted = {kind: int((kinds == k + 1).sum()) for k, kind in enumerate(BAD_KINDS)}
    organism = host.species[0] if host.species else host.display_name
    previous_cds, previous_aa = "ATGTAA", "M"
    with open(output, "w", encoding="utf-8", errors="surrogateescape", newline="\n") as out:
        out.write("\t".join(RELEASE_COLUMNS) + "\n")
        for start in range(0, rows, CHUNK_ROWS):
            n = min(CHUNK_ROWS, rows - start)
            lengths = np.clip(rng.lognormal(5.8, 0.6, n).astype(np.int64), 30, 5000)
            total = int(lengths.sum())
            aa_idx = rng.choice(len(aa_p), size=total, p=aa_p)
            pick = (rng.random(total)[:, None] > cumulative[aa_idx]).sum(axis=1)
            codons = codon_lookup[aa_idx, pick]
            bounds = np.concatenate([[0], np.cumsum(lengths)])
            codons[bounds[:-1]] = atg  # every protein starts with Met
            aa_idx[bounds[:-1]] = sorted(AA_COMPOSITION).index("M")
            cds_all = codon_bytes[codons].tobytes().decode()
            aa_all = aa_letters[aa_idx].tobytes().decode()
            stop_choice = rng.choice(stops, size=n)
            reviewed = rng.random(n) < 0.3
            location = rng.integers(0, len(LOCATIONS), n)
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
    args = parser.parse_args()
    planted = generate(args.host, args.rows, args.output, args.seed, args.bad_fraction)
    print(f"wrote {args.rows} rows to {args.output}; planted bad rows: {planted}")


if __name__ == "__main__":
    main()
