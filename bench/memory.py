"""Benchmark: peak memory of loading pretrained GPT-2 weights and of generating with them.

Run as `python -m bench memory [--preset gpt2] [--dtype F32|F16|BF16] [--tokens 100]`.
It writes a Hugging Face GPT-2 folder of random weights in the openai-community/gpt2 layout
(no `transformer.` prefix, Conv1D matrices, the `attn.bias` mask buffers) to a temporary
folder, then, each in a fresh Python process, measures the peak resident memory (VmHWM) of
  - importing tinygpt (the baseline),
  - `GPT.from_pretrained`-style loading (`tinygpt.model.pretrained.load_pretrained`),
  - loading, then generating `--tokens` tokens with the KV cache,
and prints each peak above the baseline as a multiple of the model's float32 size. Loading
must stay under 2x (the model plus less than one extra copy). Linux only (/proc).

Imports: numpy, the standard library, tinygpt.model.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def write_random_gpt2(folder, preset="gpt2", dtype="F32", seed=0):
    """A Hugging Face GPT-2 folder with random weights of `preset`'s shape; returns the number
    of parameters. Tensors are drawn one at a time, but `save_file` holds them all."""
    from tinygpt.model.config import PRESETS
    from tinygpt.model.safetensors import save_file
    p = PRESETS[preset]
    C, L, V, T = p["n_embd"], p["n_layer"], p["vocab_size"], p["block_size"]
    rng = np.random.default_rng(seed)
    np_dtype = {"F32": np.float32, "F16": np.float16, "BF16": np.float32}[dtype]

    def rand(*shape):
        a = rng.standard_normal(shape, dtype=np.float32) * 0.02
        if dtype == "BF16":          # stored as the top 16 bits (truncation), as uint16
            return (a.view(np.uint32) >> 16).astype(np.uint16)
        return a.astype(np_dtype, copy=False)

    tensors = {"wte.weight": rand(V, C), "wpe.weight": rand(T, C)}
    for i in range(L):
        h = f"h.{i}."
        tensors.update({
            h + "ln_1.weight": rand(C), h + "ln_1.bias": rand(C),
            h + "attn.bias": np.tril(np.ones((1, 1, T, T), np_dtype)) if dtype != "BF16"
            else np.tril(np.ones((1, 1, T, T), np.uint16)),
            h + "attn.c_attn.weight": rand(C, 3 * C), h + "attn.c_attn.bias": rand(3 * C),
            h + "attn.c_proj.weight": rand(C, C), h + "attn.c_proj.bias": rand(C),
            h + "ln_2.weight": rand(C), h + "ln_2.bias": rand(C),
            h + "mlp.c_fc.weight": rand(C, 4 * C), h + "mlp.c_fc.bias": rand(4 * C),
            h + "mlp.c_proj.weight": rand(4 * C, C), h + "mlp.c_proj.bias": rand(C),
        })
    tensors.update({"ln_f.weight": rand(C), "ln_f.bias": rand(C)})
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "model.safetensors")
    save_file(tensors, path, metadata={"format": "pt"})
    if dtype == "BF16":
        _retag_as_bf16(path)
    config = {"model_type": "gpt2", "n_layer": L, "n_head": p["n_head"], "n_embd": C,
              "n_positions": T, "n_ctx": T, "vocab_size": V, "layer_norm_epsilon": 1e-5,
              "activation_function": "gelu_new"}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    return sum(math.prod(a.shape) for k, a in tensors.items() if not k.endswith(".attn.bias"))


def _retag_as_bf16(path):
    """Rewrite the header's U16 dtypes as BF16 (NumPy cannot write bfloat16 itself). Offsets
    count from the data section, so only the header changes; the data is copied across."""
    import shutil
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = f.read(n).replace(b'"U16"', b'"BF16"')
        header += b" " * (-len(header) % 8)
        with open(path + ".tmp", "wb") as out:
            out.write(len(header).to_bytes(8, "little") + header)
            shutil.copyfileobj(f, out, 1 << 24)
    os.replace(path + ".tmp", path)


_CHILD = r"""
import sys, time
import numpy as np
import tinygpt as tg
from tinygpt.memory import peak_rss_mb
from tinygpt.model.pretrained import load_pretrained
def peak():
    return int(peak_rss_mb() * 2 ** 20)
what, folder, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
if what == "baseline":
    print(peak(), 0.0)
    sys.exit()
t = time.perf_counter()
model = load_pretrained(folder)
elapsed = time.perf_counter() - t
if what == "generate":
    t = time.perf_counter()
    model.generate(np.zeros((1, 1), np.int64), tokens, top_k=50, seed=0)
    elapsed = time.perf_counter() - t
print(peak(), elapsed)
"""


def measure(what, folder, tokens=100):
    """(peak RSS in bytes, seconds) of one step in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", _CHILD, what, folder, str(tokens)],
                         check=True, capture_output=True, text=True).stdout.split()
    return int(out[0]), float(out[1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--preset", default="gpt2")
    parser.add_argument("--dtype", default="F32", choices=["F32", "F16", "BF16"])
    parser.add_argument("--tokens", type=int, default=100)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        t = time.perf_counter()
        n = write_random_gpt2(folder, args.preset, args.dtype)
        print(f"wrote a random {args.preset} ({n:,} parameters, {args.dtype}, "
              f"{os.path.getsize(os.path.join(folder, 'model.safetensors')) / 2**20:,.0f} MiB "
              f"file) in {time.perf_counter() - t:.1f} s")
        model_bytes = 4 * n
        base, _ = measure("baseline", folder)
        print(f"model in float32: {model_bytes / 2**20:,.0f} MiB; "
              f"baseline (python + tinygpt): {base / 2**20:,.0f} MiB")
        for what in ("load", "generate"):
            peak, seconds = measure(what, folder, args.tokens)
            label = "load" if what == "load" else f"load + generate {args.tokens} tokens"
            print(f"{label:>28}: peak {peak / 2**20:,.0f} MiB, {(peak - base) / 2**20:,.0f} MiB "
                  f"above baseline = {(peak - base) / model_bytes:.2f} x the model "
                  f"({seconds:.1f} s {'loading' if what == 'load' else 'generating'})")


if __name__ == "__main__":
    from bench import run_as_main
    run_as_main("memory")
