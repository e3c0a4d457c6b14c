"""DNA as text for a language model: overlapping k-mers."""

from __future__ import annotations

from config.errors import ConfigError


def kmerize(sequence: str, k: int = 6, stride: int = 1) -> str:
    """Space-separated k-mers of ``sequence``, starting at 0 and ``stride`` apart.

    >>> kmerize("ACGTAC", k=3)
    'ACG CGT GTA TAC'
    >>> kmerize("acgtac", k=3, stride=3)
    'ACG TAC'

    A sequence shorter than ``k`` is returned whole (upper-cased).
    """
    if k < 1:
        raise ConfigError(f"kmer={k}: must be >= 1")
    if stride < 1:
        raise ConfigError(f"kmer-stride={stride}: must be >= 1")
    sequence = sequence.strip().upper()
    if len(sequence) <= k:
        return sequence
    return " ".join(sequence[i : i + k] for i in range(0, len(sequence) - k + 1, stride))
