"""The host registry: which organisms each host partition stands for and which input files feed it.

Adding a host is an entry in ``HOSTS``; nothing else in the code names a host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Host:
    key: str  # the Dagster partition key
    display_name: str
    file_aliases: tuple[str, ...]  # input file names from the original data release
    species: tuple[str, ...] = ()  # "Genus species" binomials that fit this host
    genera: tuple[str, ...] = ()  # whole genera that fit (any species)
    start_codons: tuple[str, ...] = ("ATG",)  # accepted initiation codons, all read as Met


HOSTS: tuple[Host, ...] = (
    Host(
        key="E_coli",
        display_name="Escherichia coli",
        file_aliases=("Ec.tsv",),
        species=("Escherichia coli",),
        # Bacterial initiation at GTG and TTG is common; the initiator tRNA still inserts Met.
        start_codons=("ATG", "GTG", "TTG"),
    ),
    Host(key="Human", display_name="Homo sapiens", file_aliases=("Human.tsv",), species=("Homo sapiens",)),
    Host(key="Mouse", display_name="Mus musculus", file_aliases=("mouse.tsv",), species=("Mus musculus",)),
    Host(
        key="S_cerevisiae",
        display_name="Saccharomyces cerevisiae",
        file_aliases=("Sac.tsv",),
        species=("Saccharomyces cerevisiae",),
    ),
    Host(
        key="P_pastoris",
        display_name="Komagataella (Pichia) pastoris and other methylotrophic yeasts",
        file_aliases=("Pic.tsv",),
        species=("Komagataella pastoris", "Komagataella phaffii"),
        # UniProt files the Pichia-clade yeasts under many current genera but keeps the old Pichia name as a
        # parenthesised synonym, which the matcher also reads.
        genera=("Komagataella", "Pichia", "Ogataea", "Hansenula"),
    ),
)

HOSTS_BY_KEY: dict[str, Host] = {host.key: host for host in HOSTS}


def get_host(key: str) -> Host:
    try:
        return HOSTS_BY_KEY[key]
    except KeyError:
        raise KeyError(f"unknown host {key!r}; known hosts: {', '.join(HOSTS_BY_KEY)}") from None


def host_for_filename(filename: str) -> Host | None:
    """The host whose release alias is this file name (case-insensitive), if any."""
    name = filename.rsplit("/", 1)[-1].lower()
    for host in HOSTS:
        if name in (alias.lower() for alias in host.file_aliases):
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
