"""The `codon-assets` command line: materializes assets through Dagster on the persistent instance (so every
run shows in the UI) and writes the original tool's file formats beside them."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from typing import NoReturn

from codon_assets.cli.common import CliError, ensure_instance_home, positive_int
from codon_assets.cli.history import add_history_parser
from codon_assets.cli.lineage import cmd_lineage
from codon_assets.cli.predict import cmd_design, cmd_predict
from codon_assets.cli.run import cmd_materialize, cmd_run

__all__ = ["CliError", "build_parser", "ensure_instance_home", "main"]


EXAMPLES = """examples:
  codon-assets run --input examples/data/Sac.tsv --output-dir out --train-surrogate
  codon-assets run --input Homo_sapiens.GRCh38.cds.all.fa.gz --host Human --output-dir out --limit 5000
  codon-assets predict --model codon-surrogate-S_cerevisiae --input new_cds.tsv --output predictions.tsv
  codon-assets design --model codon-surrogate-S_cerevisiae --input examples/proteins/S_cerevisiae.fasta \\
      --avoid-enzymes BsaI,BsmBI --output designs.gb
  codon-assets lineage --asset surrogate_model --host S_cerevisiae
  codon-assets history --asset converted_dataset --host P_pastoris
  codon-assets materialize --host P_pastoris

Every run goes through Dagster on the instance in $DAGSTER_HOME (default ./.dagster_home) and shows in its UI."""


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("codon-assets")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codon-assets", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}",
                        help="print the installed version and exit")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="materialize the graph for an input table (or a folder of host tables)")
    run.add_argument("--input", required=True,
                     help="a host table (TSV, CSV, Parquet or CDS FASTA, optionally gzip), or a folder of them")
    run.add_argument("--host", help="host partition (default: from the file name, e.g. Sac.tsv -> S_cerevisiae)")
    run.add_argument("--output-dir", required=True, help="where the seed-compatible files go")
    run.add_argument("--limit", type=positive_int, help="convert only the first N data lines (N >= 1)")
    run.add_argument("--evo2-backend", choices=["markov", "evo2", "nim"],
                     help="feature backend (default: $CODON_EVO2_BACKEND or markov)")
    run.add_argument("--train-surrogate", action="store_true",
                     help="also build the enhanced dataset and train the surrogate (tracked in MLflow)")
    run.add_argument("--measured", help="measured expression table (TSV/CSV: id, value) for this host")
    run.set_defaults(func=cmd_run)

    predict = sub.add_parser("predict", help="predicted expression (mu, sigma) for a table of CDS")
    predict.add_argument("--model", required=True,
                         help="registered name[/version], models:/ URI, saved model folder, or .pkl export")
    predict.add_argument("--input", required=True,
                         help="CDS to predict: a host table in any input format (TSV, CSV, Parquet, CDS FASTA, gzip)")
    predict.add_argument("--output", required=True, help="TSV with protein_id, mu, sigma")
    predict.add_argument("--host", help="host (default: the model's host, or from the file name)")
    predict.set_defaults(func=cmd_predict)

    from codon_assets.core.design_settings import OptimiserSettings

    defaults = OptimiserSettings()
    design = sub.add_parser("design", help="design host-specific CDS for proteins against a surrogate")
    design.add_argument("--host", help="host (default: from the file name, e.g. S_cerevisiae.fasta)")
    design.add_argument("--input", required=True, help="proteins: FASTA, or TSV with an id and a protein column")
    design.add_argument("--model", required=True, help="registered name[/version], models:/ URI, folder or .pkl")
    design.add_argument("--output", required=True,
                        help="designs, by extension: .tsv, .fa/.fasta/.fna (FASTA) or .gb/.gbk (GenBank)")
    design.add_argument("--steps", type=positive_int, default=defaults.steps, help="policy-gradient steps (>= 1)")
    design.add_argument("--group", type=positive_int, default=defaults.group,
                        help="CDS sampled per protein and step (>= 1)")
    design.add_argument("--seed", type=int, default=defaults.seed, help="random seed of the policy")
    design.add_argument("--avoid-enzymes", "--avoid-enzyme", dest="avoid_enzyme", action="append", metavar="NAMES",
                        help="avoid these enzymes' sites: REBASE names, comma-separated (e.g. BsaI,BsmBI,EcoRI); repeatable")
    design.add_argument("--avoid-motif", action="append", metavar="MOTIF",
                        help="also avoid MOTIF or NAME=MOTIF (IUPAC letters, both strands; repeatable)")
    design.add_argument("--no-default-motifs", action="store_true",
                        help=f"do not avoid the default sites ({', '.join(m.split('=')[0] for m in defaults.avoid_motifs)})")
    design.set_defaults(func=cmd_design)

    lineage = sub.add_parser("lineage", help="an asset's upstream chain with data versions, code versions, runs")
    lineage.add_argument("--asset", required=True, help="e.g. surrogate_model")
    lineage.add_argument("--host", help="host partition (for partitioned assets)")
    lineage.add_argument("--json", action="store_true", help="print JSON")
    lineage.set_defaults(func=cmd_lineage)

    mat = sub.add_parser("materialize", help="materialize all assets for hosts with input in CODON_INPUT_DIR")
    mat.add_argument("--host", action="append", help="only this host (repeatable)")
    mat.set_defaults(func=cmd_materialize)

    add_history_parser(sub)
    return parser


# Libraries behind object-store asset stores (s3://, gs://, az://) whose errors reach a command unwrapped.
OBJECT_STORE_LIBRARIES = {"botocore", "aiobotocore", "boto3", "s3fs", "fsspec", "gcsfs", "adlfs", "google", "azure"}


def console() -> NoReturn:
    """The `codon-assets` command: ``main``, then the process's exit."""
    code = main()
    # Exiting, the interpreter runs full garbage collections over every object still alive (1-2 s after a
    # large run, for nothing: the process is ending): frozen objects are left out of them.
    gc.freeze()
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    import warnings

    import dagster as dg

    # Beta/preview notices about Dagster's own API are for developers, not for a user at the terminal.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    warnings.filterwarnings("ignore", module=r"mlflow\..*")
    # MLflow and its migrations log at INFO; the command line prints its own summary.
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    args = build_parser().parse_args(argv)
    from codon_assets.cli import run_guard
    from codon_assets.core.tsv import InputError

    try:
        return args.func(args)
    except CliError as exc:
        print(f"codon-assets: error: {exc}", file=sys.stderr)
        return exc.code
    except InputError as exc:
        print(f"codon-assets: error: {exc}", file=sys.stderr)
        return 1
    except run_guard.Interrupted as exc:
        print(f"codon-assets: interrupted ({exc})", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("codon-assets: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if type(exc).__module__.partition(".")[0] not in OBJECT_STORE_LIBRARIES:
            raise
        # An object store the asset store names cannot be used (credentials, endpoint, bucket): one line.
        print(f"codon-assets: error: the asset store cannot be used: {type(exc).__name__}: "
              f"{(str(exc).splitlines() or [''])[0][:300]}", file=sys.stderr)
        return 1
