"""Data: task sources and class counts, DNA k-mers, partitioning, the three data roles."""

from tasks.datasets import TASKS, DataSource, TextDataset
from tasks.dna import kmerize
from tasks.partition import partition_indices, sample_rows, train_val_split
from tasks.splits import DataRoles, client_datasets, server_datasets

__all__ = [
    "TASKS",
    "DataRoles",
    "DataSource",
    "TextDataset",
    "client_datasets",
    "kmerize",
    "partition_indices",
    "sample_rows",
    "server_datasets",
    "train_val_split",
]
