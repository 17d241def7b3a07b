"""Hosts without measurements: a model trained on other hosts' measured labels predicts them, and how well it
does that is measured the same way, by leaving each measured host out.

A transfer model (the unified model) is trained on the per-host relative labels of the measured hosts with host
descriptors instead of a host id; ``add_transfer_host`` gives it a new host's profile from that host's records
alone. Its cross-validation mixes hosts in every fold, so it says how well the model ranks records of hosts it
has labels of, not of a host it has never seen. ``leave_one_host_out`` answers that: for each measured host, a
model fitted on the other measured hosts (label-free CAI references, as for any transferred host) predicts it.
Its Spearman per host is what a user of a transferred model can expect, and sigma for transferred hosts is
calibrated on these predictions (``transfer_sigma_scale``), with coverage cross-fitted over the held-out hosts.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from codon_assets.core.calibration import cross_fit_sigma, rank_metrics, regression_metrics, sigma_calibration
from codon_assets.core.surrogate import (CV_MAX_RECORDS, SurrogateModel, TrainingSet, cv_rows, fit_surrogates,
                                         host_profile)
from codon_assets.core.surrogate_features import FeatureBuilder, sequence_features, take_records, take_rows


def add_transfer_host(model: SurrogateModel, records: pa.Table, host_key: str) -> None:
    """Let ``model`` (trained on other hosts' measured labels) predict for ``host_key``: the host's feature
    builder (CAI reference from its ribosomal-protein genes, tAI from its tRNA table, descriptors from its
    codon usage) and design profile, from its records alone; none of its values is a label."""
    counts = sequence_features(records["sequence"])["counts"]
    model.builders[host_key] = FeatureBuilder.fit(counts, host_key, protein_names=records["protein_names"].to_pylist(),
                                                  gene_names=records["gene_names"].to_pylist())
    model.host_profiles[host_key] = host_profile(counts)
    model.hosts = sorted({*model.hosts, host_key})


def leave_one_host_out(data: TrainingSet, backend: str, seed: int = 0,
                       max_records: int = CV_MAX_RECORDS) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Each measured host predicted by a model fitted on the other measured hosts only, over ``cv_rows``.

    Returns the metrics (``spearman`` per held-out host as ``spearman.<host>``, their mean and minimum; the
    pooled fit; coverage at 1 and 2 sigma, cross-fitted: each host's sigma scaled by the factor fitted on the
    other held-out hosts; ``sigma_scale``, fitted on every held-out prediction) and the predictions (``rows``,
    ``mu``, ``sigma``, ``fold``: the held-out host's index in ``hosts``). Empty for fewer than two hosts.
    The held-out host's profile comes from its measured records (``data`` holds no others), without labels."""
    hosts = sorted(set(data.host.tolist()))
    if len(hosts) < 2:
        return {}, {}
    rows = cv_rows(data.protein, max_records, seed)
    host = data.host[rows]
    models = fit_surrogates(data, [rows[host != key] for key in hosts], backend, seed, transfer=True)
    mu, hi, floor = (np.zeros(len(rows)) for _ in range(3))
    fold = np.zeros(len(rows), dtype=np.int64)
    for k, (key, model) in enumerate(zip(hosts, models)):
        everyone = np.flatnonzero(data.host == key)
        model.builders[key] = FeatureBuilder.fit(data.stats["counts"][everyone], key,
                                                 protein_names=[data.protein_names[i] for i in everyone],
                                                 gene_names=[data.gene_names[i] for i in everyone])
        mine = host == key
        held_out = rows[mine]
        x = model.matrix(take_records(data.sequences, held_out), take_rows(data.evo2, held_out), data.host[held_out],
                         take_rows(data.stats, held_out))
        mu[mine], hi[mine] = model.quantiles_matrix(x)
        floor[mine], fold[mine] = model.sigma_floor, k
    y, spread = data.target[rows], np.abs(hi - mu)
    sigma, _ = cross_fit_sigma(y, mu, spread, floor, fold)
    per_host = {key: rank_metrics(y[fold == k], mu[fold == k])["spearman"] for k, key in enumerate(hosts)}
    pooled = regression_metrics(y, mu, sigma)
    # Ranks within a host are what a transferred host is used for: the pooled rank correlation also rewards
    # telling hosts apart, which per-host relative labels do not ask for.
    metrics = {**pooled, "spearman_pooled": pooled["spearman"],
               "spearman": float(np.mean(list(per_host.values()))), "spearman_min": min(per_host.values()),
               **{f"spearman.{key}": value for key, value in per_host.items()},
               "sigma_scale": sigma_calibration(y, mu, spread, floor), "hosts": float(len(hosts))}
    return metrics, {"rows": rows, "mu": mu, "sigma": sigma, "fold": fold}
