"""Dagster resources of the platform: where inputs are found and where asset data is kept."""

from resources.inputs import InputFiles
from resources.io_manager import ParquetIOManager
from resources.paths import dagster_home, storage_root

__all__ = ["InputFiles", "ParquetIOManager", "dagster_home", "storage_root"]
