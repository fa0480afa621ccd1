"""falcoctl's behaviour, transcribed from its tests and source (tests/data/falcoctl-vectors/README.md)."""

import json
import pathlib

VECTORS = pathlib.Path(__file__).resolve().parent / "data" / "falcoctl-vectors" / "falcoctl-vectors.json"
# The team's reference copy, beside the checkout when it is there (as in CI); the repository's copy must match it.
REFERENCE = pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "vectors" / "falcoctl-vectors.json"


def load_vectors(category):
    return [v for v in json.loads(VECTORS.read_text()) if v["category"] == category]
