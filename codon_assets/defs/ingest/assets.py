"""Ingest stage: the host's raw input files (`raw_tsv`) and their validated form (`converted_dataset`,
with every failed row in `converted_rejects`)."""

import hashlib
from dataclasses import asdict

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from codon_assets.core.convert import REASONS, ConversionResult, ConversionSettings, convert_files, count_reasons
from codon_assets.core.hosts import get_host, organism_fits_host
from codon_assets.core.input_formats import input_fingerprint
from codon_assets.core.tsv import InputError, read_release_table
from codon_assets.metadata import counts_table, markdown_table, records_version, table_metadata
from codon_assets.asset_specs import host_check, host_partitions
from resources.inputs import InputFiles

RAW_FILES_SCHEMA = pa.schema(
    [("path", pa.string()), ("sha256", pa.string()), ("bytes", pa.int64()), ("rows", pa.int64())]
)

@dg.asset(
    partitions_def=host_partitions,
    description=(
        "The host's input protein/CDS table(s) as released, fingerprinted. The data version is the content "
        "hash, so re-materializing unchanged input leaves everything downstream fresh."
    ),
)
def raw_tsv(context: dg.AssetExecutionContext, input_files: InputFiles) -> dg.Output[pa.Table]:
    host = context.partition_key
    try:
        paths = input_files.files_for(host)
        if not paths:
            aliases = ", ".join(get_host(host).file_aliases)
            raise dg.Failure(f"no input for host {host}: expected {aliases} (TSV, CSV, Parquet or CDS FASTA, "
                             f"optionally .gz) or files in {host}/ in {input_files.input_dir}")
        files = [input_fingerprint(p) for p in paths]
    except InputError as exc:  # two files for one host, an unreadable or damaged file
        raise dg.Failure(str(exc)) from None
    if not any(f["rows"] for f in files):
        # Nothing to convert: failing here keeps the host's stored data as it was.
        raise dg.Failure(f"no data rows for host {host} in {', '.join(f['path'] for f in files)}: "
                         "the input has a header at most; the stored data is unchanged")
    table = pa.Table.from_pylist(files, schema=RAW_FILES_SCHEMA)
    version = hashlib.sha256("".join(f["sha256"] for f in files).encode()).hexdigest()[:16]
    return dg.Output(
        table,
        data_version=dg.DataVersion(version),
        metadata={
            "files": dg.MetadataValue.md(markdown_table(files, max_chars=None)),
            "bytes": sum(f["bytes"] for f in files),
            "rows": sum(f["rows"] for f in files),
            "content_hash": version,
        },
    )

class ConversionConfig(dg.Config):
    min_protein_length: int = 10
    max_protein_length: int = 50_000
    max_reject_rate: float = 0.10  # above this, the reject-rate check warns
    limit: int | None = None  # convert only the first N data lines of each file (N >= 1)

CONVERTED = dg.AssetKey("converted_dataset")
REJECTS = dg.AssetKey("converted_rejects")

@dg.multi_asset(
    outs={
        "converted_dataset": dg.AssetOut(
            description=(
                "One row per valid record: normalised CDS (upper case, with stop), its translation, metadata "
                "fields, source row, CDS hash and the metadata expression estimate."
            ),
        ),
        "converted_rejects": dg.AssetOut(
            description="Every input row that failed validation, with its source row, id and reason codes.",
        ),
    },
    ins={"raw_tsv": dg.AssetIn()},
    partitions_def=host_partitions,
    check_specs=[
        host_check("rows_accounted_for", asset=CONVERTED, blocking=True,
                   description="rows read = valid + rejected"),
        host_check("unique_protein_id", asset=CONVERTED, blocking=True,
                   description="no protein_id appears twice among valid rows"),
        host_check("reject_rate", asset=CONVERTED,
                   description="warns when the share of rejected rows exceeds max_reject_rate"),
        host_check("organism_fits_host", asset=CONVERTED,
                   description="warns about records whose Organism is not one of the host's species"),
    ],
)
def converted_dataset(context: dg.AssetExecutionContext, config: ConversionConfig, raw_tsv: pa.Table):
    host = get_host(context.partition_key)
    if config.limit is not None and config.limit < 1:
        raise dg.Failure(f"limit must be at least 1, got {config.limit}")
    releases = read_releases(raw_tsv, config.limit, context.log)
    result = convert_files(releases, host, ConversionSettings(config.min_protein_length, config.max_protein_length))
    by_reason = result.rejects_by_reason()
    if result.valid.num_rows == 0:
        # An input with no usable record must not replace the host's stored data with an empty table.
        reasons = ", ".join(f"{code}: {n}" for code, n in by_reason.items()) or "no data rows"
        raise dg.Failure(f"no valid record for host {host.key}: {result.rows_read} rows read, all rejected "
                         f"({reasons}); the stored data is unchanged")
    # Its own content's version: a run of the same file with another --limit stores another table.
    yield dg.Output(result.valid, output_name="converted_dataset", metadata=conversion_metadata(result),
                    data_version=dg.DataVersion(records_version(result.valid)))
    yield dg.Output(
        result.rejects,
        output_name="converted_rejects",
        metadata={**table_metadata(result.rejects),
                  "rejects_by_reason": dg.MetadataValue.md(counts_table(by_reason, "reason", REASONS))},
    )
    yield from conversion_checks(result, host.key, config.max_reject_rate)


def read_releases(raw_tsv: pa.Table, limit: int | None, log) -> list:
    """The release tables fingerprinted by ``raw_tsv``, refusing any file changed since."""
    releases = []
    for item in raw_tsv.to_pylist():
        try:
            release = read_release_table(item["path"], limit=limit)
        except InputError as exc:
            raise dg.Failure(str(exc)) from None
        if release.sha256 != item["sha256"]:
            raise dg.Failure(f"{item['path']} changed since raw_tsv was materialized; materialize raw_tsv again")
        if release.extra_columns:
            log.info(f"{item['path']}: ignoring extra columns {release.extra_columns}")
        releases.append(release)
    return releases


def conversion_metadata(result: ConversionResult) -> dict:
    files = [asdict(counts) for counts in result.files]
    by_reason = result.rejects_by_reason()
    return {
        **table_metadata(result.valid),
        "rows_read": result.rows_read,
        "data_lines": result.data_lines,
        "blank_lines": result.blank_lines,
        "valid": result.valid.num_rows,
        "rejected": result.rejects.num_rows,
        "text_replaced_rows": result.text_replaced_rows,
        "files": dg.MetadataValue.md(markdown_table(files, max_chars=None)),
        "files_json": dg.MetadataValue.json(files),
        "rejects_by_reason": dg.MetadataValue.md(counts_table(by_reason, "reason", REASONS)),
        "rejects_by_reason_json": dg.MetadataValue.json(by_reason),
    }


def conversion_checks(result: ConversionResult, host_key: str, max_reject_rate: float):
    """The four checks of a converted partition, from the tables as written."""
    valid, rejects, rows_read = result.valid, result.rejects, result.rows_read
    # Against the physical lines counted from the bytes, not the parser's rows: two lines read as one
    # record can never pass.
    accounted = valid.num_rows + rejects.num_rows + result.blank_lines
    yield dg.AssetCheckResult(
        asset_key=CONVERTED, check_name="rows_accounted_for", passed=accounted == result.data_lines,
        metadata={"data_lines": result.data_lines, "blank_lines": result.blank_lines, "rows_read": rows_read,
                  "valid": valid.num_rows, "rejected": rejects.num_rows},
    )
    ids = valid["protein_id"]
    repeated = pc.filter(pc.value_counts(ids).field("values"), pc.greater(pc.value_counts(ids).field("counts"), 1))
    yield dg.AssetCheckResult(
        asset_key=CONVERTED, check_name="unique_protein_id", passed=len(repeated) == 0,
        metadata={"duplicated_ids": len(repeated), "examples": ", ".join(repeated.to_pylist()[:10])},
    )
    rate = rejects.num_rows / rows_read if rows_read else 0.0
    yield dg.AssetCheckResult(
        asset_key=CONVERTED, check_name="reject_rate", passed=rate <= max_reject_rate,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"reject_rate": round(rate, 4), "max_reject_rate": max_reject_rate,
                  "by_reason": dg.MetadataValue.json(count_reasons(rejects))},
    )
    host = get_host(host_key)
    organisms = pc.value_counts(valid["organism"]).to_pylist()
    misfits = {o["values"] or "(empty)": o["counts"] for o in organisms if not organism_fits_host(o["values"], host)}
    yield dg.AssetCheckResult(
        asset_key=CONVERTED, check_name="organism_fits_host", passed=not misfits,
        severity=dg.AssetCheckSeverity.WARN,
        description=(f"{sum(misfits.values())} of {valid.num_rows} records name an organism that is not "
                     f"{host.display_name}: " + ", ".join(f"{o} ({n})" for o, n in list(misfits.items())[:3])
                     if misfits else None),
        metadata={"records_not_fitting": sum(misfits.values()),
                  "organisms": dg.MetadataValue.md(counts_table(misfits, "organism"))},
    )
