"""The embedded default data: Genomic Benchmarks ``human_nontata_promoters``, in the package.

``tasks/data/human_nontata_promoters.json`` holds 9,034 DNA sequences of the
human genome (251 bases each; label 1: a non-TATA promoter, 0: not), split
into 7,227 train and 1,807 test rows, from the Genomic Benchmarks suite
(Gresova et al., BMC Genomic Data 2023; Apache-2.0). The file keeps each split
as a ``seq,label`` CSV, LZMA-compressed and base64-encoded inside JSON: Flower
packages an app (its FAB) with ``.py``, ``.toml``, ``.md``, ``.yaml`` and
``.json`` files only, so the data travels with the app to every SuperNode and
``flwr run .`` needs no network and no ``data-dir``.

Rebuild it from a folder with ``train.csv`` and ``test.csv``::

    python -m tasks.embedded ../shared/data/genomic_nontata_promoters
"""

from __future__ import annotations

import base64
import json
import lzma
import sys
from pathlib import Path

FILE = Path(__file__).resolve().parent / "data" / "human_nontata_promoters.json"
ABOUT = {
    "name": "human_nontata_promoters",
    "source": "Genomic Benchmarks (https://github.com/ML-Bioinfo-CEITEC/genomic_benchmarks), "
    "a seeded 80/20 split of its published test split",
    "licence": "Apache-2.0",
    "columns": "seq,label (1: non-TATA promoter, 0: not)",
    "encoding": "per split: CSV text, LZMA (xz) compressed, base64",
}


def embedded_csv(split: str) -> str:
    """The ``seq,label`` CSV text of ``split`` ("train" or "test") of the embedded data."""
    payload = json.loads(FILE.read_text(encoding="utf-8"))
    if split not in payload["splits"]:
        raise ValueError(f"the embedded data has no {split!r} split")
    return lzma.decompress(base64.b64decode(payload["splits"][split])).decode("utf-8")


def build(folder: Path) -> dict[str, object]:
    """The JSON document of ``folder``'s ``train.csv`` and ``test.csv``."""
    splits = {
        split: base64.b64encode(
            lzma.compress((folder / f"{split}.csv").read_bytes(), preset=9 | lzma.PRESET_EXTREME)
        ).decode("ascii")
        for split in ("train", "test")
    }
    return {**ABOUT, "splits": splits}


if __name__ == "__main__":
    FILE.parent.mkdir(exist_ok=True)
    FILE.write_text(json.dumps(build(Path(sys.argv[1])), indent=1) + "\n", encoding="utf-8")
