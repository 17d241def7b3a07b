"""Every input format of a host's protein/CDS table (gzip by content, CSV with quoting, Parquet, Ensembl and
NCBI CDS FASTA) reads into the same records as the release TSV, and every record is counted once."""

import bz2
import csv
import gzip
import io
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codon_assets.core.convert import ConversionSettings, convert_files
from codon_assets.core.fasta_headers import FASTA_COLUMNS, cds_header_fields
from codon_assets.core.hosts import get_host, host_for_filename
from codon_assets.core.input_formats import _RecordCounter, input_fingerprint, sniff_format
from codon_assets.core.tsv import RELEASE_COLUMNS, InputError, read_header, read_release_table
from codon_assets_tests.conftest import EXAMPLES, write_tsv

GOOD = "ATG" + "GCTAAAGAA" * 10 + "TAA"  # M + (AKE)x10 + stop: 31 aa
OTHER = "ATG" + "GCC" * 20 + "TAA"
THRL = "ATGAAACGCATTAGCACCACCATTACCACCACCATCACCATTACCACAGGTAACGGTGCGGGCTGA"  # E. coli thrL, 21 aa
ENSEMBL_EXAMPLE = ("ENST00000632684.1 cds chromosome:GRCh38:7:142786213:142786224:1 gene:ENSG00000282431.1 "
                   "gene_biotype:TR_D_gene transcript_biotype:TR_D_gene gene_symbol:TRBD1 "
                   "description:T cell receptor beta diversity 1 [Source:HGNC Symbol;Acc:HGNC:12158]")
NCBI_EXAMPLE = ("lcl|NC_000913.3_cds_NP_414542.1_1 [gene=thrL] [locus_tag=b0001] "
                "[db_xref=UniProtKB/Swiss-Prot:P0AD86] [protein=thr operon leader peptide] "
                "[protein_id=NP_414542.1] [location=190..255] [gbkey=CDS]")


def sac_sample() -> list[dict]:
    """Twelve real records of the bundled yeast table: ten that convert, Q0065 (a mitochondrial CDS: TGA
    inside) and Q0010 (starts with ATA)."""
    with open(EXAMPLES / "Sac.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    sample = rows[:10] + [rows[285], rows[720]]
    assert [r["Entry"] for r in sample[-2:]] == ["Q0065", "Q0010"]
    # Free text with the characters CSV has to quote.
    sample[1] = sample[1] | {"Protein names": 'Cofilin, actin-binding ("ADF")'}
    sample[2] = sample[2] | {"Protein names": "Heat shock factor,\nline two"}
    return sample


def tsv_safe(rows: list[dict]) -> list[dict]:
    """The rows as the release TSV can hold them: a line break in a field would end the line."""
    return [r | {"Protein names": r["Protein names"].replace("\n", " ")} for r in rows]


def convert(path, limit=None, host="S_cerevisiae"):
    return convert_files([read_release_table(path, limit)], get_host(host), ConversionSettings())


def assert_reconciles(result):
    for counts in result.files:
        assert counts.valid + counts.rejected + counts.blank_lines == counts.data_lines, counts
        assert counts.rows_read == counts.valid + counts.rejected, counts


RECORD = ["protein_id", "sequence", "protein_aa", "length_aa", "seq_sha256"]


def records(result):
    return result.valid.select(RECORD).to_pylist()


def rejects(result):
    return [(r["protein_id"], r["reasons"], r["detail"]) for r in result.rejects.to_pylist()]


def fasta_text(entries: list[tuple[str, str]], ending: str = "\n") -> str:
    return "".join(f">{title}{ending}" + "".join(seq[i:i + 60] + ending for i in range(0, len(seq), 60))
                   for title, seq in entries)


def ensembl_entries(rows: list[dict]) -> list[tuple[str, str]]:
    entries = []
    for row in rows:
        names = row["Gene Names"].split()
        symbol = f" gene_symbol:{names[0]}" if names and names[0].upper() != row["Entry"].upper() else ""
        title = (f"{row['Entry']} cds chromosome:R64-1-1:I:1:{len(row['RefSeq_nn'])}:1 gene:{row['Entry']} "
                 f"gene_biotype:protein_coding transcript_biotype:protein_coding{symbol} "
                 f"description:{row['Protein names'].splitlines()[0] if row['Protein names'] else 'x'} "
                 "[Source:SGD;Acc:S000000001]")
        entries.append((title, row["RefSeq_nn"]))
    return entries


def write_variant(tmp_path, variant: str, rows: list[dict]):
    """The rows as one input file: variant is the layout and how it is stored."""
    plain = tmp_path / "plain"
    if variant.startswith("tsv") or variant == "gzip named .tsv":
        write_tsv(plain, tsv_safe(rows))
    elif variant.startswith("csv"):
        with open(plain, "w", newline="") as handle:
            writer = csv.DictWriter(handle, RELEASE_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    elif variant.startswith("parquet"):
        table = pa.Table.from_pylist(rows).set_column(6, "Length", pa.array([int(r["Length"]) for r in rows]))
        pq.write_table(table, plain)
    else:
        plain.write_text(fasta_text(ensembl_entries(rows)))
    data = plain.read_bytes()
    name = {"tsv": "Sac.tsv", "tsv.gz": "Sac.tsv.gz", "gzip named .tsv": "Sac.tsv", "csv": "Sac.csv",
            "csv.gz": "Sac.csv.gz", "parquet": "Sac.parquet", "parquet.gz": "Sac.parquet.gz",
            "fa": "Saccharomyces_cerevisiae.R64-1-1.cds.all.fa",
            "fa.gz": "Saccharomyces_cerevisiae.R64-1-1.cds.all.fa.gz"}[variant]
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if variant.endswith("gz") or variant == "gzip named .tsv" else data)
    plain.unlink()
    return path


VARIANTS = ["tsv.gz", "gzip named .tsv", "csv", "csv.gz", "parquet", "parquet.gz", "fa", "fa.gz"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_format_gives_the_records_of_the_tsv_path(tmp_path, variant):
    rows = sac_sample()
    expected = convert(write_tsv(tmp_path / "expected.tsv", tsv_safe(rows)))
    assert expected.valid.num_rows == 10 and [r[0] for r in rejects(expected)] == ["Q0065", "Q0010"]

    path = write_variant(tmp_path, variant, rows)
    result = convert(path)
    assert records(result) == records(expected)
    assert rejects(result) == rejects(expected)
    assert result.valid["source_row"].to_pylist() == expected.valid["source_row"].to_pylist()
    assert_reconciles(result)
    (counts,) = result.files
    assert counts.data_lines == len(rows) and counts.rows_read == len(rows)
    kind = {"gzip named .tsv": "tsv+gzip", "fa": "fasta", "fa.gz": "fasta+gzip"}.get(variant, variant)
    assert counts.input_format == kind.replace(".gz", "+gzip")
    kind = kind.split("+")[0]
    assert str(sniff_format(path)) == counts.input_format
    # The command line's check before a run reads the header of every format.
    header = read_header(path)
    assert header == list(FASTA_COLUMNS if kind == "fasta" else RELEASE_COLUMNS)
    assert input_fingerprint(path)["rows"] == counts.data_lines
    # A limit keeps the first records of every format.
    limited = convert(path, limit=3)
    assert limited.files[0].data_lines == 3 and limited.rows_read == 3
    assert records(limited) == records(expected)[:3]
    if kind in ("csv", "parquet"):  # free text arrives as written, commas, quotes and line breaks included
        assert result.valid["protein_names"].to_pylist()[1:3] == ['Cofilin, actin-binding ("ADF")',
                                                                  "Heat shock factor,\nline two"]
        assert result.valid["length"].to_pylist() == expected.valid["length"].to_pylist()


def test_gzip_is_recognised_by_content_not_by_name(tmp_path):
    rows = [{"Entry": "P1", "RefSeq_nn": GOOD}, {"Entry": "P2", "RefSeq_nn": OTHER}]
    text = write_tsv(tmp_path / "t.tsv", rows).read_bytes()
    gz_named_tsv = tmp_path / "a.tsv"
    # Two gzip members one after another (as bgzip or `cat a.gz b.gz` write) are one stream.
    gz_named_tsv.write_bytes(gzip.compress(text[:100]) + gzip.compress(text[100:]))
    plain_named_gz = tmp_path / "b.tsv.gz"
    plain_named_gz.write_bytes(text)
    for path, fmt in ((gz_named_tsv, "tsv+gzip"), (plain_named_gz, "tsv")):
        result = convert(path, host="Human")
        assert result.valid["protein_id"].to_pylist() == ["P1", "P2"], path
        assert result.files[0].input_format == fmt and result.files[0].data_lines == 2
        assert_reconciles(result)
    # The hash is of the file as stored (what raw_tsv fingerprints).
    import hashlib

    release = read_release_table(gz_named_tsv)
    assert release.sha256 == hashlib.sha256(gz_named_tsv.read_bytes()).hexdigest()


@pytest.mark.parametrize("damage, message, at_start", [
    (lambda gz: gz[:-20], "ends early", False),  # truncated
    (lambda gz: gz[:2] + b"\x00" * 8 + gz[10:], "damaged gzip", True),  # a gzip header that is not one
    (lambda gz: gz[:200] + bytes(b ^ 0x5A for b in gz[200:260]) + gz[260:], "damaged gzip", False),
])
def test_damaged_gzip_is_one_clear_input_error(tmp_path, damage, message, at_start):
    rows = [{"Entry": f"P{i}", "RefSeq_nn": "ATG" + "GCC" * (20 + i) + "TAA"} for i in range(40)]
    data = write_tsv(tmp_path / "t.tsv", rows).read_bytes()
    path = tmp_path / "Sac.tsv.gz"
    path.write_bytes(damage(gzip.compress(data)))
    with pytest.raises(InputError) as excinfo:
        read_release_table(path)
    error = str(excinfo.value)
    assert message in error and str(path) in error and "\n" not in error
    if at_start:
        with pytest.raises(InputError, match="damaged gzip"):  # the command line's check sees it too
            read_header(path)


@pytest.mark.parametrize("content, message", [
    (bz2.compress(b"Entry\tRefSeq_nn\n"), "bzip2"),
    (gzip.compress(b"PK\x03\x04rest of a zip"), "ZIP archive"),
    (bytes(range(256)) * 4, "binary data"),
    (b"PAR1 but no Parquet footer", "not a readable Parquet file"),
])
def test_unknown_or_corrupt_formats_are_one_clear_line(tmp_path, content, message):
    path = tmp_path / "Sac.tsv"
    path.write_bytes(content)
    for read in (read_release_table, read_header):
        with pytest.raises(InputError) as excinfo:
            read(path)
        assert message in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_csv_quoting_blank_and_malformed_records(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text(
        "Entry,Protein names,RefSeq_nn\r\n"
        f'P1,"Kinase, ""putative""",{GOOD}\r\n'
        "\r\n"  # an empty line: a blank record
        f'P2,"two\r\nlines",{OTHER}\r\n'  # one record over two lines
        f"P3,{OTHER}\r\n"  # two fields: malformed
        f'P4,"",{THIRD}\r\n'
    )
    result = convert(path, host="Human")
    assert result.valid["protein_id"].to_pylist() == ["P1", "P2", "P4"]
    assert result.valid["protein_names"].to_pylist() == ['Kinase, "putative"', "two\r\nlines", ""]
    # source_row is the record number (a quoted line break does not shift the records after it).
    assert result.valid["source_row"].to_pylist() == [1, 3, 5]
    assert rejects(result) == [(None, ["malformed_row"], "2 fields, expected 3")]
    (counts,) = result.files
    assert counts.data_lines == 5 and counts.blank_lines == 1
    assert_reconciles(result)


THIRD = "ATG" + "GGT" * 20 + "TAA"


def test_a_csv_quote_left_open_refuses_the_file_in_one_line(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text(f'Entry,Protein names,RefSeq_nn\nP1,"open quote,{GOOD}\nP2,x,{OTHER}\n')
    with pytest.raises(InputError) as excinfo:
        read_release_table(path)
    assert "CSV record 1" in str(excinfo.value) and "quote" in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_parquet_nulls_numbers_and_extra_columns(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"Entry": ["P1", None, "P3", None], "RefSeq_nn": [GOOD, OTHER, None, None],
                             "Length": [31, None, 7, None], "Note": ["a", "b", "c", None]}), path)
    result = convert(path, host="Human")
    assert result.valid["protein_id"].to_pylist() == ["P1"] and result.valid["length"].to_pylist() == ["31"]
    assert [(r["source_row"], r["reasons"]) for r in result.rejects.to_pylist()] == [
        (2, ["missing_id"]), (3, ["missing_sequence"])]
    (counts,) = result.files
    assert counts.data_lines == 4 and counts.blank_lines == 1  # row 4 holds nothing
    assert_reconciles(result)
    assert read_release_table(path).extra_columns == ["Note"]


def test_ensembl_headers():
    fields, problems = cds_header_fields(ENSEMBL_EXAMPLE, "Homo sapiens")
    assert problems == {}
    # The stable id without its version names the record; the id as written is kept as Entry Name.
    assert fields["Entry"] == "ENST00000632684" and fields["Entry Name"] == "ENST00000632684.1"
    assert fields["Gene Names"] == "TRBD1 ENSG00000282431"
    assert fields["Protein names"] == "T cell receptor beta diversity 1"
    assert fields["Organism"] == "Homo sapiens" and fields.get("RefSeq_id", "") == ""
    # Only Ensembl's own ENS... ids lose a version: other ids keep their dot (an isoform, not a version).
    arabidopsis = "AT1G01010.1 cds chromosome:TAIR10:1:3631:5899:1 gene:AT1G01010"
    assert cds_header_fields(arabidopsis)[0]["Entry"] == "AT1G01010.1"
    # A header without symbol or description still names the gene.
    assert cds_header_fields("YAL001C_mRNA cds gene:YAL001C")[0]["Gene Names"] == "YAL001C"


def test_ensembl_fasta_converts_with_organism_from_the_file_name(tmp_path):
    path = tmp_path / "Homo_sapiens.GRCh38.cds.all.fa.gz"
    good = ("ENST00000000001.5 cds chromosome:GRCh38:1:1:99:1 gene:ENSG00000000002.3 gene_biotype:protein_coding "
            "transcript_biotype:protein_coding gene_symbol:ABC1 description:ABC protein 1 "
            "[Source:HGNC Symbol;Acc:HGNC:1]")
    path.write_bytes(gzip.compress(fasta_text([(ENSEMBL_EXAMPLE, "GGGACAGGGGGC"), (good, GOOD.lower())]).encode()))
    assert host_for_filename(path.name).key == "Human"
    result = convert(path, host="Human")
    record = result.valid.to_pylist()[0]
    assert (record["protein_id"], record["entry_name"], record["gene_names"], record["organism"]) == (
        "ENST00000000001", "ENST00000000001.5", "ABC1 ENSG00000000002", "Homo sapiens")
    assert record["sequence"] == GOOD and record["protein_aa"] == "M" + "AKE" * 10 and record["source_row"] == 2
    # The 12-nt TRBD1 segment is no protein: every check that needs no given protein says why.
    assert rejects(result)[0][:2] == ("ENST00000632684", ["no_start_codon", "no_stop_codon",
                                                          "protein_length_out_of_bounds"])
    assert_reconciles(result)


def test_ncbi_headers():
    fields, problems = cds_header_fields(NCBI_EXAMPLE)
    assert problems == {}
    assert fields == {"Entry": "P0AD86", "Reviewed": "reviewed", "Entry Name": "lcl|NC_000913.3_cds_NP_414542.1_1",
                      "Protein names": "thr operon leader peptide", "Gene Names": "thrL b0001",
                      "RefSeq_id": "NP_414542.1", "Genome_id": "NC_000913.3"}
    trembl, _ = cds_header_fields("lcl|NC_1.1_cds_XP_2.1_2 [locus_tag=L2] [db_xref=GeneID:7,UniProtKB/TrEMBL:A0A0X1] "
                                  "[protein=protein [Fe-S] cluster assembly factor] [protein_id=XP_2.1] [gbkey=CDS]")
    assert (trembl["Entry"], trembl["Reviewed"], trembl["Gene Names"]) == ("A0A0X1", "unreviewed", "L2")
    assert trembl["Protein names"] == "protein [Fe-S] cluster assembly factor"


def test_ncbi_fasta_converts_and_rejects_with_reasons(tmp_path):
    path = tmp_path / "GCF_000005845.2_ASM584v2_cds_from_genomic.fna.gz"
    entries = [
        (NCBI_EXAMPLE, THRL),
        ("lcl|NC_000913.3_cds_NP_000002.1_2 [gene=abcD] [locus_tag=b0002] [protein=made-up protein] "
         "[protein_id=NP_000002.1] [gbkey=CDS]", GOOD),
        ("lcl|NC_000913.3_cds_b0003_3 [gene=xyzP] [locus_tag=b0003] [pseudo=true] [gbkey=CDS]", OTHER),
        ("lcl|NC_000913.3_cds_b0004_4 [locus_tag=b0004] [gbkey=CDS]", THIRD),
        ("lcl|NC_000913.3_cds_NP_000005.1_5 [protein_id=NP_000005.1] [gbkey=CDS]", "ATGTAA" + "GCC" * 20 + "TAA"),
    ]
    path.write_bytes(gzip.compress(fasta_text(entries).encode()))
    assert host_for_filename(path.name) is None  # NCBI names no species: such a file goes in <input>/<host>/
    result = convert(path, host="E_coli")
    valid = result.valid.to_pylist()
    assert [(r["protein_id"], r["refseq_id"], r["genome_id"], r["gene_names"], r["reviewed"]) for r in valid] == [
        ("P0AD86", "NP_414542.1", "NC_000913.3", "thrL b0001", True),
        ("NP_000002.1", "NP_000002.1", "NC_000913.3", "abcD b0002", None)]
    assert valid[0]["protein_aa"] == "MKRISTTITTTITITTGNGAG"
    assert valid[0]["protein_names"] == "thr operon leader peptide"
    assert [(r["source_row"], r["reasons"], r["detail"]) for r in result.rejects.to_pylist()] == [
        (3, ["pseudogene"], "[pseudo=true] in the header of lcl|NC_000913.3_cds_b0003_3"),
        (4, ["missing_id"], "no protein_id in the header of lcl|NC_000913.3_cds_b0004_4"),
        (5, ["internal_stop"], "TAA at codon 2")]
    (counts,) = result.files
    assert counts.data_lines == 5 and counts.input_format == "fasta+gzip"
    assert_reconciles(result)


def test_fasta_records_that_do_not_translate_are_rejected_and_counted(tmp_path):
    path = tmp_path / "cds.fa"
    entries = [("ok1 first", GOOD), ("stop1", "ATG" + "GCC" * 10 + "TAG" + "GCC" * 10 + "TAA"),
               ("frame1", GOOD[:-1]), ("n1", "ATGNNN" + "GCC" * 20 + "TAA"), ("empty1", ""), ("", OTHER),
               ("short1", "ATGAAATAA"), ("dup1", GOOD)]
    # Windows line endings, and an id that is not UTF-8.
    data = fasta_text(entries, ending="\r\n").encode() + b">bad\xff id\r\n" + THIRD.encode() + b"\r\n"
    path.write_bytes(data)
    result = convert(path, host="Human")
    assert result.valid["protein_id"].to_pylist() == ["ok1"]
    assert result.valid["protein_names"].to_pylist() == ["first"]
    assert {r["source_row"]: r["reasons"] for r in result.rejects.to_pylist()} == {
        2: ["internal_stop"], 3: ["length_not_multiple_of_3"], 4: ["non_acgt"], 5: ["missing_sequence"],
        6: ["missing_id"], 7: ["protein_length_out_of_bounds"], 8: ["duplicate_sequence"], 9: ["not_utf8"]}
    (counts,) = result.files
    assert counts.data_lines == 9 and counts.blank_lines == 0  # a header is a record, never a blank line
    assert_reconciles(result)


def test_fasta_records_are_counted_from_the_bytes_across_blocks():
    data = b"\xef\xbb\xbf>a\r\nAC>GT\r>b\n\n>c\nACG\r\n>"
    for size in range(1, len(data) + 1):
        counter = _RecordCounter()
        for start in range(0, len(data), size):
            counter.feed(data[start : start + size])
        assert counter.records == 4, size


def test_folder_discovery_by_alias_species_and_host_folder(tmp_path):
    from resources.inputs import InputFiles

    (tmp_path / "Sac.tsv.gz").write_bytes(gzip.compress(b"Entry\tRefSeq_nn\n"))
    (tmp_path / "Homo_sapiens.GRCh38.cds.all.fa.gz").write_bytes(b"")
    (tmp_path / "Sac_measured.tsv").write_text("gene\tfpkm\n")
    (tmp_path / "E_coli").mkdir()
    for name in ("GCF_000005845.2_ASM584v2_cds_from_genomic.fna.gz", "batch.csv", "notes.txt", ".batch.tsv"):
        (tmp_path / "E_coli" / name).write_text("")
    finder = InputFiles(input_dir=str(tmp_path))
    assert [p.name for p in finder.files_for("S_cerevisiae")] == ["Sac.tsv.gz"]
    assert [p.name for p in finder.files_for("Human")] == ["Homo_sapiens.GRCh38.cds.all.fa.gz"]
    assert [p.name for p in finder.files_for("E_coli")] == ["GCF_000005845.2_ASM584v2_cds_from_genomic.fna.gz",
                                                            "batch.csv"]
    assert finder.files_for("Mouse") == []

    # Two files for one host: an error naming both (the same input in two forms is not read twice).
    (tmp_path / "Saccharomyces_cerevisiae.R64-1-1.cds.all.fa.gz").write_bytes(b"")
    with pytest.raises(InputError, match="Sac.tsv.gz, Saccharomyces_cerevisiae.R64-1-1.cds.all.fa.gz"):
        finder.files_for("S_cerevisiae")
    (tmp_path / "E_coli" / "batch.csv.gz").write_bytes(b"")
    with pytest.raises(InputError, match="batch.csv, batch.csv.gz"):
        finder.files_for("E_coli")
    # A host in conflict still has data: its run reports the conflict.
    assert finder.hosts_with_data(["E_coli", "Human", "Mouse", "S_cerevisiae"]) == ["E_coli", "Human", "S_cerevisiae"]


@pytest.mark.parametrize("name, host", [
    ("Sac.tsv", "S_cerevisiae"), ("SAC.TSV.GZ", "S_cerevisiae"), ("Sac.csv", "S_cerevisiae"),
    ("Pic.parquet", "P_pastoris"), ("Ec.fna.gz", "E_coli"), ("mouse.fasta", "Mouse"),
    ("Saccharomyces_cerevisiae.R64-1-1.cds.all.fa.gz", "S_cerevisiae"), ("Mus_musculus.GRCm39.cds.all.fa", "Mouse"),
    ("Escherichia_coli_str_k_12_substr_mg1655_gca_000005845.ASM584v2.cds.all.fa.gz", "E_coli"),
    ("Komagataella_phaffii_gs115.ASM2700v1.cds.all.fa.gz", "P_pastoris"),
    ("Sac_ensembl.tsv", None), ("Sac.tsv.bak", None), ("Saccharomyces_cerevisiae_measured.tsv", None),
    ("GCF_000005845.2_ASM584v2_cds_from_genomic.fna.gz", None), ("Danio_rerio.GRCz11.cds.all.fa.gz", None),
])
def test_file_names_of_every_format_map_to_hosts(name, host):
    found = host_for_filename(name)
    assert (found.key if found else None) == host


def test_zip_is_still_refused_with_what_it_is(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("Sac.tsv", "Entry\tRefSeq_nn\n")
    path = tmp_path / "Sac.tsv"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(InputError, match="ZIP archive"):
        read_release_table(path)
