"""Dagster resources of the platform: where inputs are found (``resources.inputs``), where asset data is
kept (``resources.io_manager``, ``resources.model_store``) and the Evo 2 feature
backends (``resources.evo2``). Nothing is imported here, so the torch backend loads without Dagster (the GPU
benchmark runs where only torch is installed)."""
