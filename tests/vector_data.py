"""falcoctl's behaviour, transcribed from its tests and source, shipped beside the project in shared/vectors."""

import json
import pathlib

VECTORS = pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "vectors" / "falcoctl-vectors.json"


def load_vectors(category):
    if not VECTORS.exists():
        raise FileNotFoundError(f"{VECTORS} is missing: the vector tests need shared/vectors beside the checkout")
    return [v for v in json.loads(VECTORS.read_text()) if v["category"] == category]
