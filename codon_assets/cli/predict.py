"""`predict` and `design`: a saved or registered surrogate applied to user tables."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from codon_assets.cli.common import (CliError, ensure_instance_home, ensure_writable_file, resolve_host,
                                     transfer_quality)

def load_surrogate(reference: str):
    """A surrogate from a `.pkl` the user names (joblib: only load files you trust), a saved model folder,
    or the MLflow registry (`name`, `name/version`, `models:/...`)."""
    from codon_assets.core.surrogate import SurrogateModel

    path = Path(reference)
    if reference.endswith(".pkl"):
        if not path.is_file():
            raise CliError(f"{path}: no such model file")
        import joblib

        try:
            bundle = joblib.load(path)
        except Exception:  # whatever unpickling a foreign file raises, it is not our model
            bundle = None
        if not isinstance(bundle, dict) or not isinstance(bundle.get("surrogate"), SurrogateModel):
            raise CliError(f"{path}: not a codon-assets surrogate export")
        return bundle["surrogate"]
    if path.is_dir() and (path / "surrogate.json").exists():
        try:
            return SurrogateModel.load(path)
        except Exception as exc:  # a damaged or foreign folder: name the file and the first line
            raise CliError(f"{path}: not a readable saved surrogate ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
    if path.exists() and not reference.startswith("models:/"):
        raise CliError(f"{path}: not a surrogate (expected a .pkl export or a saved model folder)")
    from resources.mlflow_tracking import MlflowTracking, load_registered

    try:
        return load_registered(reference, MlflowTracking.from_settings())
    except Exception as exc:  # the registry's own errors are long; the user needs the one line
        raise CliError(f"cannot load model {reference!r} from the MLflow registry: {str(exc).splitlines()[0]}")


def cmd_predict(args: argparse.Namespace) -> int:
    """mu and sigma for every valid record of a table, featurised exactly as in training. A record whose
    language-model features could not be computed gets no prediction, and the reason."""
    import numpy as np
    import pandas as pd

    from codon_assets.core.convert import ConversionSettings, convert_files, count_reasons
    from codon_assets.core.files import atomic_text_writer
    from codon_assets.core.hosts import get_host
    from codon_assets.core.surrogate import predict_frame
    from codon_assets.core.surrogate_features import EVO2_COLUMNS
    from codon_assets.core.tsv import read_release_table

    source, output = Path(args.input), Path(args.output)
    model_path = Path(args.model)  # a model file or folder is read too (else a registry name)
    ensure_writable_file(output, inputs=(source, model_path) if model_path.exists() else (source,))
    release = read_release_table(source)
    ensure_instance_home()
    model = load_surrogate(args.model)
    if args.host:
        host = resolve_host(source, args.host)
    elif len(model.hosts) == 1:
        host = model.hosts[0]
    else:
        host = resolve_host(source, None)
    result = convert_files([release], get_host(host), ConversionSettings())
    records = result.valid
    if host not in model.hosts:
        transfer_to_input_host(model, host, records)
    print(f"[{host}] {model_kind(model, host)}", file=sys.stderr)
    frame = pd.DataFrame({"protein_id": records["protein_id"].to_pylist(), "sequence": records["sequence"].to_pylist(),
                          "seq_sha256": records["seq_sha256"].to_pylist(), "host": host})
    reason = np.full(len(frame), "", dtype=object)
    if model.backend != "markov" and len(frame):
        from codon_assets.core.features import extract_features
        from codon_assets.defs.resources import feature_resource

        evo2 = feature_resource(model.backend)
        evo2.setup_for_execution(None)
        scorer = evo2.scorer()
        features, _ = extract_features(records.select(["protein_id", "sequence", "seq_sha256"]), scorer, evo2.cache())
        for name in EVO2_COLUMNS:
            frame[name] = features[name].to_numpy(zero_copy_only=False).astype(float)
        failed = np.array(features["status"].to_pylist()) != "success"
        reason[failed] = [f"features_failed: {e}" for e in np.array(features["error"].to_pylist(), dtype=object)[failed]]
    predicted = reason == ""
    mu, sigma = np.full(len(frame), np.nan), np.full(len(frame), np.nan)
    if predicted.any():
        mu[predicted], sigma[predicted] = predict_frame(model, frame[predicted])
    reasons = count_reasons(result.rejects)
    failure = (f"{source}: nothing could be predicted ({len(frame)} valid records, {int((~predicted).sum())} "
               f"without features, {result.rejects.num_rows} rejected"
               + (": " + ", ".join(f"{code} {n}" for code, n in reasons.items()) if reasons else "") + ")")
    if not len(frame):  # no record to report on: an output a user may already have is left as it was
        raise CliError(failure)
    with atomic_text_writer(output) as handle:
        pd.DataFrame({"protein_id": frame["protein_id"], "mu": mu, "sigma": sigma,
                      "status": np.where(predicted, "predicted", "not_predicted"), "reason": reason}
                     ).to_csv(handle, sep="\t", index=False, na_rep="")
    reasons = ", ".join(f"{k}: {v}" for k, v in result.rejects_by_reason().items()) or "none"
    print(f"[{host}] {result.rows_read} rows: {int(predicted.sum())} predicted, {int((~predicted).sum())} without "
          f"features (no prediction) -> {args.output}; {result.rejects.num_rows} rejected ({reasons})", file=sys.stderr)
    if not predicted.any():  # every record is in the output, each with the reason it has no prediction
        raise CliError(failure)
    return 0


def model_kind(model, host: str) -> str:
    """Which kind of model predicts ``host``: one trained on the host's measurements, or a transferred one."""
    if model.label_source_for(host) == "measured":
        return f"model trained on measured labels of {host}"
    return (f"transferred model: no measured labels of {host}; trained on the measurements of "
            f"{', '.join(model.source_hosts)}, applied through {host}'s codon usage, tRNA and GC profile; "
            f"{transfer_quality(model.metrics)}")


def transfer_to_input_host(model, host: str, records) -> None:
    """Let ``model`` predict a host it has never seen, from the input's own records: the host's feature
    profile and (markov backend) its Markov model; none of the records' values is a label."""
    from codon_assets.core.transfer import add_transfer_host
    from codon_assets.defs.resources import feature_resource

    if records.num_rows < 100:
        raise CliError(f"the model has no profile for {host} and {records.num_rows} valid records are too few to "
                       "build one (at least 100): predict with a model that knows the host", code=2)
    add_transfer_host(model, records, host)
    if model.backend == "markov":
        model.markov_models[host] = feature_resource("markov").fit_markov(records)


def cmd_design(args: argparse.Namespace) -> int:
    """Design CDS for target proteins against a surrogate, outside Dagster (the asset does the same)."""
    from codon_assets.core.design_formats import OutputFormatError, design_output_format, write_designs
    from codon_assets.core.design_settings import OptimiserSettings, SettingsError
    from codon_assets.core.proteins import read_proteins
    from codon_assets.defs.design.assets import DesignConfig, run_design

    try:  # every setting and the output format are checked before any work
        design_output_format(args.output)
        motifs = (() if args.no_default_motifs else OptimiserSettings().avoid_motifs) + tuple(args.avoid_motif or ())
        config = DesignConfig(steps=args.steps, group=args.group, seed=args.seed,
                              avoid_enzymes=[name.strip() for names in args.avoid_enzyme or [] for name in names.split(",") if name.strip()],
                              avoid_motifs=list(motifs))
        config.settings()
    except (SettingsError, OutputFormatError) as exc:
        raise CliError(str(exc), code=2) from None
    ensure_writable_file(Path(args.output), inputs=(Path(args.input),))
    ensure_instance_home()
    host = resolve_host(Path(args.input), args.host, host_data=False)
    proteins, rejects = read_proteins(args.input)  # unusable input is refused before the model loads
    if not proteins:
        counts = Counter(reject.reason for reject in rejects)
        raise CliError(f"{args.input}: no usable protein ({len(rejects)} rejected"
                       + (": " + ", ".join(f"{reason} {n}" for reason, n in counts.most_common()) if counts else "") + ")")
    model = load_surrogate(args.model)
    if host not in model.host_profiles or host not in model.markov_models:
        raise CliError(f"the model has no profile for {host} (trained for {', '.join(model.hosts)})", code=2)
    print(f"[{host}] {model_kind(model, host)}", file=sys.stderr)
    try:
        designs, summary = run_design(model, host, proteins, config)
    except ValueError as exc:  # a genetic code designs do not support
        raise CliError(str(exc), code=2) from None
    write_designs(designs, args.output)
    if lacking := [p.protein_id for p in proteins if not p.protein.startswith("M")]:
        print(f"[{host}] note: {len(lacking)} protein(s) had no leading Met ({', '.join(lacking[:5])}"
              f"{' ...' if len(lacking) > 5 else ''}): a CDS starts with ATG, so their designs encode M + the protein "
              "(the protein column of the output)", file=sys.stderr)
    for reject in rejects:
        print(f"rejected {reject.protein_id or '?'} ({reject.source}): {reject.reason} {reject.detail}", file=sys.stderr)
    print(f"[{host}] {len(designs)} designs -> {args.output}; feasible {summary['n_feasible']}/{len(designs)}; "
          f"mean reward gain over preferred codons {summary['mean_reward_gain_over_preferred']:+.3f}, "
          f"over random synonyms {summary['mean_reward_gain_over_random']:+.3f}", file=sys.stderr)
    return 0

