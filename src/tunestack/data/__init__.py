"""Datasets: read files, folders, built-ins and hub ids, detect their formats and convert them to canonical rows."""

from tunestack.data.builtin import BUILTIN_DATASETS, list_datasets
from tunestack.data.load import DataSplits, load_datasets

__all__ = ["BUILTIN_DATASETS", "DataSplits", "list_datasets", "load_datasets"]
