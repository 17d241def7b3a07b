"""The input resource: which input files (TSV, CSV, Parquet or CDS FASTA, optionally gzip-compressed) feed
each host partition."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from codon_assets.core.hosts import HOSTS, file_stems, get_host, host_for_filename, input_suffix
from codon_assets.core.proteins import FASTA_SUFFIXES, TABLE_SUFFIXES
from codon_assets.core.tsv import InputError
from codon_assets.settings import DEFAULT_INPUT_DIR, DEFAULT_PROTEINS_DIR


PROTEIN_SUFFIXES = FASTA_SUFFIXES + TABLE_SUFFIXES
MEASURED_SUFFIXES = ("_measured.tsv", "_measured.csv", "_measured.tsv.gz", "_measured.csv.gz")


def measured_stem(name: str) -> str | None:
    """The lower-cased stem of a measured-expression table's name (``Sac_measured.tsv`` -> ``sac``), or None
    for any other file."""
    lower = name.lower()
    suffix = next((s for s in MEASURED_SUFFIXES if lower.endswith(s) and len(lower) > len(s)), None)
    return lower.removesuffix(suffix) if suffix else None


class InputFiles(dg.ConfigurableResource):
    """Finds a host's input tables in ``input_dir``.

    A host reads one release file named for it (case-insensitive): its release alias with any input ending
    (``Sac.tsv``, ``Sac.tsv.gz``, ``Sac.csv``, ``Sac.parquet``, ``Sac.fa``/``.fasta``/``.fna``, each also
    ``.gz``), or an Ensembl CDS file of one of its species (``Saccharomyces_cerevisiae.R64-1-1.cds.all.fa.gz``);
    two such files for one host are an error naming both. It also reads every input file in
    ``<input_dir>/<host>/`` (all of them, in name order: NCBI's ``*_cds_from_genomic.fna.gz`` names no
    species, so it goes there); two of them that differ only in their ending (``b1.tsv``, ``b1.tsv.gz``)
    are an error naming both. The content, not the name, decides how a file is read. ``files`` pins
    explicit files for a host instead (the command line uses it to run one file).
    """

    input_dir: str = str(DEFAULT_INPUT_DIR)
    files: dict[str, list[str]] = {}
    # Measured expression per host: explicit files, else `<alias stem>_measured.tsv|csv[.gz]` beside the host's
    # release file (e.g. Sac_measured.tsv next to Sac.tsv).
    measured: dict[str, str] = {}
    measured_value_column: str | None = None
    # Target proteins for codon design: `<proteins_dir>/<host>.fasta|.fa|.tsv`, or explicit files.
    proteins_dir: str = str(DEFAULT_PROTEINS_DIR)
    proteins: dict[str, str] = {}

    def files_for(self, host_key: str) -> list[Path]:
        """The host's input files, or InputError when two files are the same input (named in the message)."""
        if host_key in self.files:
            return [Path(p).resolve() for p in self.files[host_key]]
        host = get_host(host_key)
        root = Path(self.input_dir)
        if not root.is_dir():
            return []
        found = [p for p in sorted(root.iterdir())
                 if p.is_file() and (match := host_for_filename(p.name)) is not None and match.key == host.key]
        if len(found) > 1:
            raise InputError(f"{root}: {len(found)} input files for host {host.key}: "
                             f"{', '.join(p.name for p in found)}; keep one")
        host_dir = root / host.key
        if host_dir.is_dir():
            batch = sorted(p for p in host_dir.iterdir()
                           if p.is_file() and not p.name.startswith(".") and input_suffix(p.name))
            by_stem: dict[str, list[Path]] = {}
            for p in batch:
                by_stem.setdefault(p.name.lower().removesuffix(input_suffix(p.name) or ""), []).append(p)
            copies = [names for names in by_stem.values() if len(names) > 1]
            if copies:
                raise InputError(f"{host_dir}: the same input twice for host {host.key}: "
                                 f"{', '.join(p.name for p in copies[0])}; keep one")
            found += batch
        return [p.resolve() for p in found]

    def unclaimed(self) -> list[str]:
        """What in ``input_dir`` looks like input but feeds no host: a file with an input ending (not hidden)
        whose name no host claims, a measured table named for no host, and a link to nothing (also in a
        ``<host>/`` folder). Commands report these before work instead of skipping them."""
        root = Path(self.input_dir)
        if not root.is_dir():
            return []
        keys = {host.key for host in HOSTS}
        found = []
        for path in sorted(root.iterdir()):
            if path.name.startswith("."):
                continue
            if path.is_symlink() and not path.exists():
                found.append(f"{path.name} (a link to nothing)")
            elif path.is_dir() and path.name in keys:
                found += [f"{path.name}/{p.name} (a link to nothing)" for p in sorted(path.iterdir())
                          if not p.name.startswith(".") and p.is_symlink() and not p.exists()]
            elif path.is_file() and (stem := measured_stem(path.name)) is not None:
                if not any(stem in file_stems(host) for host in HOSTS):
                    found.append(f"{path.name} (a measured table of no host)")
            elif path.is_file() and input_suffix(path.name) and host_for_filename(path.name) is None:
                found.append(path.name)
        return found

    def hosts_with_data(self, host_keys: list[str]) -> list[str]:
        """Hosts with input files; a host whose files are in conflict counts, so that its run reports it."""
        with_data = []
        for key in host_keys:
            try:
                if self.files_for(key):
                    with_data.append(key)
            except InputError:
                with_data.append(key)
        return with_data

    def measured_for(self, host_key: str) -> Path | None:
        """The host's measured table: an explicit file, else ``<stem>_measured.tsv|csv[.gz]`` beside its input, the
        stem one that names the host (``Sac_measured.tsv``, ``S_cerevisiae_measured.tsv``; any case). Two of
        them are an error naming both."""
        if host_key in self.measured:
            return Path(self.measured[host_key]).resolve()
        root = Path(self.input_dir)
        if not root.is_dir():
            return None
        stems = file_stems(get_host(host_key))
        found = [p for p in sorted(root.iterdir()) if p.is_file() and measured_stem(p.name) in stems]
        if len(found) > 1:
            raise InputError(f"{root}: {len(found)} measured tables for host {host_key}: "
                             f"{', '.join(p.name for p in found)}; keep one")
        return found[0].resolve() if found else None

    def proteins_for(self, host_key: str) -> Path | None:
        """The host's target proteins: an explicit file, else the file in ``proteins_dir`` named for the host
        key (any case) with a protein ending, optionally ``.gz`` (``S_cerevisiae.fasta``, ``s_cerevisiae.faa.gz``,
        ``S_cerevisiae.tsv``); two such files are an error naming both."""
        if host_key in self.proteins:
            return Path(self.proteins[host_key]).resolve()
        root = Path(self.proteins_dir)
        if not root.is_dir():
            return None
        names = {f"{host_key.lower()}{suffix}{gz}" for suffix in PROTEIN_SUFFIXES for gz in ("", ".gz")}
        found = [p for p in sorted(root.iterdir()) if p.is_file() and p.name.lower() in names]
        if len(found) > 1:
            raise InputError(f"{root}: {len(found)} target protein files for host {host_key}: "
                             f"{', '.join(p.name for p in found)}; keep one")
        return found[0].resolve() if found else None
