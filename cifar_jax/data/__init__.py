"""CIFAR data: reading the official releases (or TFDS / synthetic data) into memory,
downloading them, and the seeded splits taken from them."""

from cifar_jax.data.download import download_archive
from cifar_jax.data.sources import (
    DATA_SOURCES,
    DATASETS,
    LABEL_TYPES,
    CifarData,
    load_dataset,
    read_official,
    read_tfds,
    synthetic_data,
)
from cifar_jax.data.splits import (
    ArraySplit,
    balanced_subset,
    channel_mean_std,
    class_subset,
    stratified_split,
)

__all__ = [
    "DATASETS",
    "DATA_SOURCES",
    "LABEL_TYPES",
    "ArraySplit",
    "CifarData",
    "balanced_subset",
    "channel_mean_std",
    "class_subset",
    "download_archive",
    "load_dataset",
    "read_official",
    "read_tfds",
    "stratified_split",
    "synthetic_data",
]
