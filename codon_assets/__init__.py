"""codon-assets: Dagster assets for protein-coding DNA design."""

import os

# LightGBM's OpenMP threads spin while they wait; on a small shared machine (2 cores running a webserver,
# a daemon and a run) that made cross-validation 10x slower. Passive waiting must be chosen before the
# OpenMP runtime loads, i.e. before anything imports lightgbm.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
