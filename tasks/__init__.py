"""Data: task loaders, DNA k-mers, partitioning among clients, server split."""

from tasks.datasets import TASKS, TextDataset, load_task, validate_data_dir
from tasks.dna import kmerize
from tasks.partition import partition_indices, sample_rows, train_val_split
from tasks.splits import client_datasets, server_dataset

__all__ = [
    "TASKS",
    "TextDataset",
    "client_datasets",
    "kmerize",
    "load_task",
    "partition_indices",
    "sample_rows",
    "server_dataset",
    "train_val_split",
    "validate_data_dir",
]
