"""The inbox sensor: a new or changed input table (TSV, CSV, Parquet or CDS FASTA, optionally gzip) dropped into
the inbox requests a run for its host partition.

A file maps to a host by its release name (``Sac.tsv`` -> S_cerevisiae) or by its folder
(``<inbox>/P_pastoris/batch7.tsv``). The cursor holds each file's content hash, so an unchanged file never
triggers twice and a changed one triggers again. Only regular files inside the inbox count: a symlink or
a path that resolves outside it is skipped with a reason.
"""

import hashlib
import json
from pathlib import Path

import dagster as dg

from codon_assets.core.hosts import HOSTS_BY_KEY, host_for_filename, input_suffix
from codon_assets.defs.automation import jobs  # the module, so the job is defined (autoloaded) once
from codon_assets.settings import inbox_dir


def host_of(path: Path, inbox: Path) -> str | None:
    host = host_for_filename(path.name)
    if host is not None:
        return host.key
    parent = path.parent.name if path.parent != inbox else None
    return parent if parent in HOSTS_BY_KEY else None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def scan_inbox(inbox: Path, known: dict[str, str]) -> tuple[list[tuple[str, Path, str]], list[str], dict[str, str]]:
    """(requests as (host, path, sha256), skipped reasons, new cursor) for the files in the inbox."""
    requests, skipped, cursor = [], [], dict(known)
    if not inbox.is_dir():
        return requests, [f"inbox {inbox} does not exist"], cursor
    root = inbox.resolve()
    for path in sorted(p for p in inbox.rglob("*") if input_suffix(p.name)):
        relative = path.relative_to(inbox).as_posix()
        if path.is_symlink() or any(p.is_symlink() for p in path.parents if p != inbox and inbox in p.parents):
            skipped.append(f"{relative}: symbolic link, not followed")
            continue
        if not path.resolve().is_relative_to(root) or not path.is_file():
            skipped.append(f"{relative}: outside the inbox or not a regular file")
            continue
        host = host_of(path, inbox)
        if host is None:
            skipped.append(f"{relative}: maps to no host (use a release name such as Sac.tsv or a <host>/ folder)")
            continue
        digest = file_sha256(path)  # read in blocks: inbox files can be gigabytes
        if known.get(relative) == digest:
            continue
        cursor[relative] = digest
        requests.append((host, path.resolve(), digest))
    return requests, skipped, cursor


@dg.sensor(job=jobs.host_graph_job, minimum_interval_seconds=60,
           description="New or changed TSV files in the inbox ($CODON_INBOX_DIR) request a host_graph_job run "
                       "for their host partition, reading that file.")
def inbox_sensor(context: dg.SensorEvaluationContext):
    inbox = inbox_dir()
    requests, skipped, cursor = scan_inbox(inbox, json.loads(context.cursor) if context.cursor else {})
    for reason in skipped:
        context.log.info(f"skipped {reason}")
    run_requests = [
        dg.RunRequest(
            run_key=f"{path.name}:{digest[:16]}",
            partition_key=host,
            run_config={"resources": {"input_files": {"config": {"files": {host: [str(path)]}}}}},
            tags={"codon_assets/trigger": "inbox", "codon_assets/file": str(path)},
        )
        for host, path, digest in requests
    ]
    return dg.SensorResult(
        run_requests=run_requests,
        cursor=json.dumps(cursor, sort_keys=True),
        skip_reason=None if run_requests else dg.SkipReason("; ".join(skipped) or "no new or changed files"),
    )

