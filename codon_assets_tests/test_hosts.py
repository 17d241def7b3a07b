import pytest

from codon_assets.core.hosts import HOSTS, get_host, host_for_filename, organism_binomials, organism_fits_host
from codon_assets.asset_specs import host_partitions


def test_partitions_come_from_the_registry():
    assert host_partitions.get_partition_keys() == ["E_coli", "Human", "Mouse", "S_cerevisiae", "P_pastoris"]
    assert [h.key for h in HOSTS] == host_partitions.get_partition_keys()


@pytest.mark.parametrize(
    "name, host",
    [("Ec.tsv", "E_coli"), ("Human.tsv", "Human"), ("mouse.tsv", "Mouse"), ("MOUSE.TSV", "Mouse"),
     ("Sac.tsv", "S_cerevisiae"), ("/data/in/Pic.tsv", "P_pastoris"), ("Sac_ensembl.tsv", None)],
)
def test_file_aliases(name, host):
    found = host_for_filename(name)
    assert (found.key if found else None) == host


def test_binomials_skip_strains_and_common_names():
    organism = "Komagataella phaffii (strain GS115 / ATCC 20864) (Yeast) (Pichia pastoris)"
    assert organism_binomials(organism) == [("Komagataella", "phaffii"), ("Pichia", "pastoris")]
    assert organism_binomials("Saccharomyces cerevisiae (strain ATCC 204508 / S288c) (Baker's yeast)") == [
        ("Saccharomyces", "cerevisiae")
    ]


@pytest.mark.parametrize(
    "organism, host, fits",
    [
        ("Escherichia coli (strain K12)", "E_coli", True),
        ("Escherichia coli O157:H7", "E_coli", True),
        ("Escherichia fergusonii (strain ATCC 35469)", "E_coli", False),
        ("Homo sapiens (Human)", "Human", True),
        ("Mus musculus (Mouse)", "Human", False),
        ("Mus musculus (Mouse)", "Mouse", True),
        ("Saccharomyces cerevisiae (strain ATCC 204508 / S288c) (Baker's yeast)", "S_cerevisiae", True),
        ("Komagataella pastoris (Yeast) (Pichia pastoris)", "P_pastoris", True),
        # Pichia-clade yeasts carry the old genus as a parenthesised synonym.
        ("Scheffersomyces stipitis (strain ATCC 58785 / CBS 6054) (Yeast) (Pichia stipitis)", "P_pastoris", True),
        ("Ogataea methanolica (Yeast) (Pichia methanolica)", "P_pastoris", True),
        ("Saccharomyces cerevisiae (Baker's yeast)", "P_pastoris", False),
        ("", "P_pastoris", False),
    ],
)
def test_organism_fits_host(organism, host, fits):
    assert organism_fits_host(organism, get_host(host)) is fits


def test_unknown_host_names_the_known_ones():
    with pytest.raises(KeyError, match="E_coli"):
        get_host("Zebrafish")
