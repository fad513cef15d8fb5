"""Source mixing weights, applied to the train split only (val/test stay as they are).

A train document of a source with weight w appears floor(w) times, plus once more when a
hash of its id falls below the fraction part: deterministic, no RNG state. Weight 2.0 doubles
a source, 0.5 keeps a hash-chosen half, 0 drops it from train (keeping its val/test docs).
Copies are spread out: build.Corpus.write_split writes the train documents in order,
repeated in rounds (round r: the documents with more than r copies).
"""

from __future__ import annotations

import math

from llm_pipeline.data.records import Document, doc_id, unit_interval


def copies(doc: Document, weight: float, seed: str) -> int:
    whole, frac = math.floor(weight), weight - math.floor(weight)
    return whole + (frac > 0 and unit_interval(doc_id(doc.source, doc.text), f"{seed}/weight") < frac)
