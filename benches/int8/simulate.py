"""Simulates the native encoder's int8 linear layers in sentence-transformers (PyTorch) and
reports the cosine between quantised and f32 embeddings, to choose the quantisation's
granularity before writing kernels. Weights: symmetric int8, one scale per output and group
of G inputs; activations: asymmetric u8, one scale and zero point per row and group
(G = None: one per row / per output).

    /opt/st-venv/bin/python benches/int8/simulate.py models/all-MiniLM-L6-v2 \
        ../shared/bench/utterances_2000.txt [N]
"""
import sys

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

torch.set_num_threads(2)
model = SentenceTransformer(sys.argv[1], device="cpu")
sents = [l for l in open(sys.argv[2]).read().splitlines() if l.strip()]
sents = sents[: int(sys.argv[3])] if len(sys.argv) > 3 else sents
ref = model.encode(sents, batch_size=32, normalize_embeddings=True)


def grouped(f, x, g):
    if g is None:
        return f(x)
    return f(x.reshape(*x.shape[:-1], x.shape[-1] // g, g)).reshape(x.shape)


def weights(w):
    s = w.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / 127
    return (w / s).round().clamp(-127, 127) * s


def activations(x):
    lo, hi = x.amin(dim=-1, keepdim=True), x.amax(dim=-1, keepdim=True)
    s = ((hi - lo) / 255).clamp(min=1e-12)
    z = (-lo / s).round()
    return ((x / s + z).round().clamp(0, 255) - z) * s


linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
original = {id(l): l.weight.data.clone() for l in linears}


def run(name, g):
    hooks = []
    for l in linears:
        l.weight.data = grouped(weights, original[id(l)], g)
        hooks.append(l.register_forward_pre_hook(lambda m, a: (grouped(activations, a[0], g),)))
    e = model.encode(sents, batch_size=32, normalize_embeddings=True)
    for h in hooks:
        h.remove()
    for l in linears:
        l.weight.data = original[id(l)]
    c = (e * ref).sum(1)
    print(f"{name}: lowest {c.min():.6f} mean {c.mean():.6f} below 0.999: {(c < 0.999).sum()}/{len(c)}")


run("per row / per output", None)
run("groups of 128", 128)
run("groups of 64", 64)
