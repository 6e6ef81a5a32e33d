"""Mergeable column summaries: histograms on fixed edges, category counts, null and zero rates.

Every profile has an empty value (``zero``) and an associative ``merge``, so hourly profiles combine
into days and shards into wholes; reference profiles are stored as versioned JSON.
"""

from mlsleuth.profiles._categorical import CategoricalProfile, profile_categorical
from mlsleuth.profiles._drift import aligned_counts, drift
from mlsleuth.profiles._numeric import NumericProfile, edges_from_reference, profile_numeric
from mlsleuth.profiles._reference import (
    FORMAT_VERSION,
    ColumnProfile,
    ReferenceProfile,
    profile_like,
    profile_reference,
)

__all__ = [
    "FORMAT_VERSION",
    "CategoricalProfile",
    "ColumnProfile",
    "NumericProfile",
    "ReferenceProfile",
    "aligned_counts",
    "drift",
    "edges_from_reference",
    "profile_categorical",
    "profile_like",
    "profile_numeric",
    "profile_reference",
]
