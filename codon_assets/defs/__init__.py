"""Every Dagster definition of the code location, one folder per stage, autoloaded by
``codon_assets/definitions.py``: ``ingest/`` (raw input, validated records), ``features/`` (language-model
features), ``model/`` (enhanced dataset, surrogates), ``design/`` (codon designs), ``automation/`` (jobs,
schedule, sensor) and ``resources.py``. Each asset body is thin: the work is in ``codon_assets/core/``."""
