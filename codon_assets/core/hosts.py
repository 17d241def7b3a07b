"""The host registry: which organisms each host partition stands for, which input files feed it and which
genetic code its CDS are read with.

Hosts are data: the YAML hosts file shipped as ``codon_assets/data/hosts.yaml``, or the file the setting
``CODON_HOSTS_FILE`` names instead (:func:`codon_assets.settings.hosts_file`). Adding a host is an entry in
that file; nothing in the code names a host. The file is read and validated once per process, and read
again when the setting names another file; ``HOSTS`` and ``HOSTS_BY_KEY`` are live views of the file in
use, so a module that imported them follows it. A file that is not valid raises ``InputError`` with one
line naming the file, the entry and the problem.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from codon_assets import settings
from codon_assets.core.genetic_code import genetic_code, table_ids
from codon_assets.core.tsv import InputError


@dataclass(frozen=True)
class Host:
    key: str  # the Dagster partition key
    display_name: str
    file_aliases: tuple[str, ...]  # input file names from the original data release
    species: tuple[str, ...] = ()  # "Genus species" binomials that fit this host
    genera: tuple[str, ...] = ()  # whole genera that fit (any species)
    start_codons: tuple[str, ...] = ("ATG",)  # accepted initiation codons, all read as Met
    translation_table: int = 1  # NCBI genetic code id (Bio.Data.CodonTable): 1 standard, 11 bacterial, ...
    trna_table: str | None = None  # a file name under codon_assets/data/trna/


REQUIRED_FIELDS = ("key", "display_name", "species", "file_aliases", "translation_table")
OPTIONAL_FIELDS = ("genera", "start_codons", "trna_table")
_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_SPECIES = re.compile(r"^[A-Z][a-z]+ [a-z][a-z-]*$")
_GENUS = re.compile(r"^[A-Z][a-z]+$")
_CODON = re.compile(r"^[ACGT]{3}$", re.IGNORECASE)


class _EntryError(Exception):
    """A problem with one entry; the loader adds the file and the entry to the message."""


def trna_dir() -> Path:
    """The folder of the bundled tRNA copy-number tables."""
    return Path(str(resources.files("codon_assets") / "data" / "trna"))


def trna_table_path(host: Host) -> Path | None:
    """The tRNA copy-number table the host's entry names, if it names one."""
    return trna_dir() / host.trna_table if host.trna_table else None


def _text(entry: dict, name: str) -> str:
    value = entry[name]
    if not isinstance(value, str) or not value.strip():
        raise _EntryError(f"{name} must be non-empty text, not {value!r}")
    return value.strip()


def _texts(entry: dict, name: str, pattern: re.Pattern | None = None, what: str = "") -> tuple[str, ...]:
    value = entry.get(name)
    values = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
        raise _EntryError(f"{name} must be a list of text items, not {value!r}")
    values = [v.strip() for v in values]
    for v in values:
        if pattern is not None and not pattern.match(v):
            raise _EntryError(f"{name} item {v!r} is not {what}")
    if len(set(values)) < len(values):
        raise _EntryError(f"{name} lists {next(v for v in values if values.count(v) > 1)!r} twice")
    return tuple(values)


def file_stems(host: Host) -> dict[str, str]:
    """The lower-cased file-name stems that name ``host`` (each alias without its ending, and the host key:
    ``S_cerevisiae.tsv``), with the alias or key each comes from."""
    return {host.key.lower(): host.key, **{alias_stem(alias): alias for alias in host.file_aliases}}


def alias_stem(alias: str) -> str:
    """The file alias without its input ending, lower-cased: what a file name is matched by."""
    if "/" in alias or "\\" in alias:
        raise _EntryError(f"file alias {alias!r} must be a file name alone, without a folder")
    suffix = input_suffix(alias)
    if suffix is None or alias.strip() != alias:
        raise _EntryError(f"file alias {alias!r} is not a file name with an input ending "
                          f"({', '.join(INPUT_ENDINGS)}, optionally .gz)")
    return alias.lower().removesuffix(suffix)


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a field given twice in one mapping (PyYAML would keep the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"{key} is given twice", key_node.start_mark)
            if isinstance(key, Hashable):
                seen.add(key)
        return super().construct_mapping(node, deep)


def _host(entry: Any) -> Host:
    if not isinstance(entry, dict):
        raise _EntryError(f"expected a mapping of fields (key: ..., display_name: ...), not {entry!r}")
    unknown = sorted(str(name) for name in entry if name not in REQUIRED_FIELDS + OPTIONAL_FIELDS)
    if unknown:
        raise _EntryError(f"unknown field {unknown[0]}; fields are {', '.join(REQUIRED_FIELDS + OPTIONAL_FIELDS)}")
    missing = [name for name in REQUIRED_FIELDS if entry.get(name) is None]
    if missing:
        raise _EntryError(f"missing field {missing[0]}")
    key = _text(entry, "key")
    if not _KEY.match(key):
        raise _EntryError(f"key {key!r} must be letters, digits and _, starting with a letter (it names a folder)")
    species = _texts(entry, "species", _SPECIES, 'a binomial "Genus species"')
    if not species:
        raise _EntryError("species must name at least one binomial")
    table = entry["translation_table"]
    if isinstance(table, bool) or not isinstance(table, int):
        raise _EntryError(f"translation_table must be a number (an NCBI table id), not {table!r}")
    if table not in table_ids():
        raise _EntryError(f"unknown translation_table {table!r}; NCBI tables are {', '.join(map(str, table_ids()))}")
    code = genetic_code(table)
    if entry.get("start_codons") is None:
        starts = code.start_codons
    else:
        starts = tuple(c.upper() for c in _texts(entry, "start_codons", _CODON, "a codon"))
        if not starts:
            raise _EntryError("start_codons is empty; leave it out to accept the table's initiation codons")
        wrong = [c for c in starts if c not in code.start_codons]
        if wrong:
            raise _EntryError(f"start codon {wrong[0]} is not an initiation codon of table {table} "
                              f"({code.name}: {', '.join(code.start_codons)})")
    trna = entry.get("trna_table")
    if trna is not None:
        if not isinstance(trna, str) or "/" in trna or "\\" in trna or not (trna_dir() / trna).is_file():
            shipped = ", ".join(sorted(p.name for p in trna_dir().glob("*.csv")))
            raise _EntryError(f"trna_table {trna!r} is not a file in codon_assets/data/trna/ ({shipped})")
    aliases = _texts(entry, "file_aliases")
    for alias in aliases:
        alias_stem(alias)
    return Host(key=key, display_name=_text(entry, "display_name"), file_aliases=aliases, species=species,
                genera=_texts(entry, "genera", _GENUS, "a capitalised genus"), start_codons=starts,
                translation_table=table, trna_table=trna)


def load_hosts(path: str | Path) -> tuple[Host, ...]:
    """The hosts of a hosts file, validated (no cache: see ``HOSTS`` for the file in use)."""
    path = Path(path)
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the hosts file: {getattr(exc, 'strerror', None) or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{path}: the hosts file is not valid YAML{where}: {problem}") from None
    if not isinstance(document, dict) or list(document) != ["hosts"] or not isinstance(document["hosts"], list):
        raise InputError(f"{path}: a hosts file holds one mapping, hosts:, with a list of host entries")
    if not document["hosts"]:
        raise InputError(f"{path}: the hosts list is empty")
    hosts: list[Host] = []
    keys: dict[str, int] = {}
    stems: dict[str, tuple[int, str]] = {}
    for n, entry in enumerate(document["hosts"], 1):
        key = entry.get("key") if isinstance(entry, dict) else None
        label = f"entry {n}" + (f" ({key})" if isinstance(key, str) and key.strip() else "")
        try:
            host = _host(entry)
            if host.key in keys:
                raise _EntryError(f"duplicate key {host.key} (also entry {keys[host.key]})")
            for stem, name in file_stems(host).items():
                if stem in stems:
                    other, taken = stems[stem]
                    what = "host key" if name == host.key else "file alias"
                    raise _EntryError(f"{what} {name} names the same files as {taken} of entry {other}")
                stems[stem] = (n, name)
        except _EntryError as exc:
            raise InputError(f"{path}: {label}: {exc}") from None
        keys[host.key] = n
        hosts.append(host)
    return tuple(hosts)


@dataclass(frozen=True)
class _Registry:
    path: str
    hosts: tuple[Host, ...]
    by_key: dict[str, Host]
    by_file_stem: dict[str, Host]


_loaded: _Registry | None = None
_loading = threading.Lock()


def _registry() -> _Registry:
    """The hosts of the file in use, read once per process and again when the setting names another file."""
    global _loaded
    path = str(settings.hosts_file())
    current = _loaded
    if current is not None and current.path == path:
        return current
    with _loading:
        if _loaded is None or _loaded.path != path:
            hosts = load_hosts(path)
            _loaded = _Registry(path, hosts, {h.key: h for h in hosts},
                                {stem: h for h in hosts for stem in file_stems(h)})
        return _loaded


def reload_hosts() -> None:
    """Read the hosts file again on next use (after it was edited in place)."""
    global _loaded
    with _loading:
        _loaded = None


class _HostList(Sequence):
    """``HOSTS``: the hosts of the file in use, in file order."""

    def __getitem__(self, index):  # type: ignore[override]
        return _registry().hosts[index]

    def __len__(self) -> int:
        return len(_registry().hosts)

    def __iter__(self) -> Iterator[Host]:
        return iter(_registry().hosts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and not isinstance(other, str) and tuple(self) == tuple(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"HOSTS{_registry().hosts!r}"


class _HostsByKey(Mapping):
    """``HOSTS_BY_KEY``: the hosts of the file in use, by key."""

    def __getitem__(self, key: str) -> Host:
        return _registry().by_key[key]

    def __iter__(self) -> Iterator[str]:
        return iter(_registry().by_key)

    def __len__(self) -> int:
        return len(_registry().by_key)

    def __contains__(self, key: object) -> bool:
        return key in _registry().by_key

    def __repr__(self) -> str:
        return f"HOSTS_BY_KEY{_registry().by_key!r}"


HOSTS: Sequence[Host] = _HostList()
HOSTS_BY_KEY: Mapping[str, Host] = _HostsByKey()


def get_host(key: str) -> Host:
    try:
        return HOSTS_BY_KEY[key]
    except KeyError:
        raise KeyError(f"unknown host {key!r}; known hosts: {', '.join(HOSTS_BY_KEY)}") from None


# The endings of an input file's name, longest first (the content, not the name, decides how it is read).
INPUT_ENDINGS = (".tsv", ".csv", ".parquet", ".fa", ".fasta", ".fna")
INPUT_SUFFIXES: tuple[str, ...] = tuple(
    sorted((base + gz for base in INPUT_ENDINGS for gz in ("", ".gz")), key=len, reverse=True)
)
# Ensembl names a CDS file by its species: Saccharomyces_cerevisiae.R64-1-1.cds.all.fa.gz,
# Escherichia_coli_str_k_12_substr_mg1655_gca_000005845.ASM584v2.cds.all.fa.gz.
_ENSEMBL_CDS_FILE = re.compile(r"^([a-z]+)_([a-z]+)[^.]*\..*\.cds\.all\.fa(?:\.gz)?$")


def input_suffix(filename: str) -> str | None:
    """The input-file ending of a file name (".tsv.gz"), case-insensitive, or None when it has none."""
    name = filename.rsplit("/", 1)[-1].lower()
    return next((suffix for suffix in INPUT_SUFFIXES if name.endswith(suffix) and len(name) > len(suffix)), None)


def ensembl_species(filename: str) -> str | None:
    """"Genus species" named by an Ensembl CDS file name (Homo_sapiens.GRCh38.cds.all.fa.gz), if it is one."""
    match = _ENSEMBL_CDS_FILE.match(filename.rsplit("/", 1)[-1].lower())
    return f"{match.group(1).capitalize()} {match.group(2)}" if match else None


def host_for_filename(filename: str) -> Host | None:
    """The host a file name stands for (case-insensitive), if any: a release alias or the host key with any
    input ending (Sac.tsv, Sac.tsv.gz, Sac.csv, Sac.parquet, Sac.fa.gz, S_cerevisiae.tsv), or an Ensembl CDS
    file of one of the host's species or genera (Saccharomyces_cerevisiae.R64-1-1.cds.all.fa.gz)."""
    name = filename.rsplit("/", 1)[-1].lower()
    registry = _registry()
    suffix = input_suffix(name)
    if suffix is not None and (host := registry.by_file_stem.get(name.removesuffix(suffix))) is not None:
        return host
    binomial = ensembl_species(name)
    if binomial:
        genus, species = (part.lower() for part in binomial.split())
        for host in registry.hosts:
            if f"{genus} {species}" in (s.lower() for s in host.species):
                return host
        for host in registry.hosts:
            if genus in (g.lower() for g in host.genera):
                return host
    return None


_PARENTHESISED = re.compile(r"\(([^()]*)\)")
_BINOMIAL = re.compile(r"^([A-Z][a-z]+)(?:\s+([a-z][a-z-]+))?")


def organism_binomials(organism: str) -> list[tuple[str, str | None]]:
    """(genus, species) pairs named by a UniProt organism string.

    "Komagataella phaffii (strain GS115 / ATCC 20864) (Yeast) (Pichia pastoris)" names
    ("Komagataella", "phaffii") and, through its synonym, ("Pichia", "pastoris"); strain notes and common
    names ("Yeast") are not binomials and are skipped.
    """
    parts = [_PARENTHESISED.sub("", organism)] + _PARENTHESISED.findall(organism)
    names = []
    for part in parts:
        match = _BINOMIAL.match(part.strip())
        if match and not part.strip().lower().startswith("strain"):
            genus, species = match.group(1), match.group(2)
            # A lone capitalised word such as "Yeast" or "Baker's" is a common name, not a genus.
            if species is not None:
                names.append((genus, species))
    return names


def organism_fits_host(organism: str | None, host: Host) -> bool:
    """Whether the organism is (a synonym of) one of the host's species or genera."""
    if not organism:
        return False
    for genus, species in organism_binomials(organism):
        if genus in host.genera or f"{genus} {species}" in host.species:
            return True
    return False
