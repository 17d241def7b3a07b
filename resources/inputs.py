"""The input resource: which TSV files feed each host partition."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from codon_assets.core.hosts import get_host
from resources.paths import DEFAULT_INPUT_DIR, DEFAULT_PROTEINS_DIR


class InputFiles(dg.ConfigurableResource):
    """Finds a host's input tables in ``input_dir``.

    A host reads its release alias (``Ec.tsv``, ``Human.tsv``, ``mouse.tsv``, ``Sac.tsv``, ``Pic.tsv``;
    case-insensitive) and every ``<input_dir>/<host>/*.tsv``. ``files`` pins explicit files for a host
    instead (the command line uses it to run one file).
    """

    input_dir: str = str(DEFAULT_INPUT_DIR)
    files: dict[str, list[str]] = {}
    # Measured expression per host: explicit files, else `<alias stem>_measured.tsv|csv` beside the host's
    # release file (e.g. Sac_measured.tsv next to Sac.tsv).
    measured: dict[str, str] = {}
    measured_value_column: str | None = None
    # Target proteins for codon design: `<proteins_dir>/<host>.fasta|.fa|.tsv`, or explicit files.
    proteins_dir: str = str(DEFAULT_PROTEINS_DIR)
    proteins: dict[str, str] = {}

    def files_for(self, host_key: str) -> list[Path]:
        if host_key in self.files:
            return [Path(p).resolve() for p in self.files[host_key]]
        host = get_host(host_key)
        root = Path(self.input_dir)
        if not root.is_dir():
            return []
        aliases = {alias.lower() for alias in host.file_aliases}
        found = [p for p in sorted(root.iterdir()) if p.is_file() and p.name.lower() in aliases]
        host_dir = root / host.key
        if host_dir.is_dir():
            found += sorted(p for p in host_dir.glob("*.tsv") if p.is_file())
        return [p.resolve() for p in found]

    def hosts_with_data(self, host_keys: list[str]) -> list[str]:
        return [key for key in host_keys if self.files_for(key)]

    def measured_for(self, host_key: str) -> Path | None:
        if host_key in self.measured:
            return Path(self.measured[host_key]).resolve()
        root = Path(self.input_dir)
        for alias in get_host(host_key).file_aliases:
            stem = alias.rsplit(".", 1)[0]
            for candidate in (root / f"{stem}_measured.tsv", root / f"{stem}_measured.csv"):
                if candidate.is_file():
                    return candidate.resolve()
        return None

    def proteins_for(self, host_key: str) -> Path | None:
        if host_key in self.proteins:
            return Path(self.proteins[host_key]).resolve()
        for suffix in (".fasta", ".fa", ".tsv"):
            candidate = Path(self.proteins_dir) / f"{host_key}{suffix}"
            if candidate.is_file():
                return candidate.resolve()
        return None
