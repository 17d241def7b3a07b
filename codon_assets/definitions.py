"""The code location: every definition under ``codon_assets/defs/`` (one folder per stage, autoloaded),
each asset stamped with the project's owners, group, code version and kinds (``codon_assets/asset_specs.py``),
and the deployment profile's executor, which every job without its own uses (UI materializations and
backfills, schedules, sensors, automation and the command line alike)."""

from __future__ import annotations

import warnings
from pathlib import Path

import dagster as dg

import codon_assets.defs
from codon_assets.asset_specs import stamp
from codon_assets.deployment import default_executor

# load_defs takes the module and a root (the package: an installed copy has no pyproject.toml above it, as in
# the images), so a checkout and an installation load alike; `dg check defs` / `dg list defs` find this module
# through [tool.dg] in pyproject.toml.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.PreviewWarning)  # map_resolved_asset_specs is a preview in Dagster 1.13
    defs = dg.Definitions.merge(
        dg.load_defs(codon_assets.defs, project_root=Path(codon_assets.__file__).resolve().parent),
        dg.Definitions(executor=default_executor()),
    ).map_resolved_asset_specs(func=stamp)
