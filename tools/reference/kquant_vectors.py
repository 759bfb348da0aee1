#!/usr/bin/env python3
"""Test vectors for kernels/dtype's block types: random blocks (with finite f16 scales)
dequantised by the `gguf` package's numpy code (gguf.quants), an implementation
independent of specd's C. Writes tests/fixtures/kquant_vectors.json; run by hand:

    python3 tools/reference/kquant_vectors.py --out tests/fixtures/kquant_vectors.json
"""
import argparse
import json
from importlib.metadata import version

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

# type -> (block bytes, byte offsets of its f16 scale fields)
TYPES = {
    "q5_0": (T.Q5_0, 22, [0]),
    "q5_1": (T.Q5_1, 24, [0, 2]),
    "q4_k": (T.Q4_K, 144, [0, 2]),
    "q5_k": (T.Q5_K, 176, [0, 2]),
    "q6_k": (T.Q6_K, 210, [208]),
    "q8_0": (T.Q8_0, 34, [0]),
    "q4_0": (T.Q4_0, 18, [0]),
    "q4_1": (T.Q4_1, 20, [0, 2]),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--blocks", type=int, default=2)
    a = ap.parse_args()
    rng = np.random.default_rng(20240501)
    out = {"made_by": {"script": "tools/reference/kquant_vectors.py", "gguf": version("gguf"),
                       "numpy": version("numpy")}, "types": {}}
    for name, (qt, nbytes, scales) in TYPES.items():
        raw = rng.integers(0, 256, size=(a.blocks, nbytes), dtype=np.uint8)
        for b in range(a.blocks):
            for off in scales:
                v = np.float16(rng.uniform(-0.05, 0.05) if off else rng.uniform(0.001, 0.05))
                raw[b, off:off + 2] = np.frombuffer(v.tobytes(), dtype=np.uint8)
        vals = dequantize(raw.reshape(-1), qt).astype(np.float32).reshape(-1)
        out["types"][name] = {
            "bytes": raw.reshape(-1).tobytes().hex(),
            "floats_bits": [int(x) for x in vals.view(np.uint32)],
        }
    with open(a.out, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
