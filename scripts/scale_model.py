#!/usr/bin/env python3
"""A model of scale on paper: time per training step (forward + backward of the whole model) of
a sequence of n tokens split across P ranks of one core each, for the polynomial method (its
states handed along the ranks, as polygrad does it, and an exclusive prefix scan, which it does
not do) and for ring exact attention (contiguous shards, as polygrad does it, and balanced ones).

Inputs: per-core rates measured on this project's machine (README, "Long context"), and an
assumed network. Prints markdown tables for docs/sequence_parallel.md:

    python3 scripts/scale_model.py [--bandwidth 25e9] [--latency 2e-6]
"""
import argparse
import math

# Measured (README "Long context", polygrad_long_context, 2 threads, float, demo model):
#   poly adjoint, n = 2^20: wall 278.8 s, attention 254.1 s
#   exact, n = 2^17:        wall 442.8 s, attention 440.1 s
CORES = 2
POLY_ATTENTION = 254.1 * CORES / 2**20           # core-s per token, 4 layers, fwd + bwd
ROW_WISE = (278.8 - 254.1) * CORES / 2**20       # core-s per token, everything but attention
EXACT_ATTENTION = 440.1 * CORES / (2**17) ** 2   # core-s per token^2, causal, 4 layers

MODELS = {
    # name: (layers, d_model, heads, d_h, k = C(d_h + g, g) at g = 7)
    "demo": (4, 64, 8, 8, 6435),
    "wide": (4, 256, 32, 8, 6435),
}


def scaled_rates(model):
    """Per-core rates of `model`, from the demo's: attention grows with the heads (d_h fixed),
    the row-wise layers with d_model^2."""
    layers, d_model, heads, _, _ = MODELS[model]
    demo_layers, demo_d, demo_heads, _, _ = MODELS["demo"]
    attention = heads / demo_heads * layers / demo_layers
    row_wise = (d_model / demo_d) ** 2 * layers / demo_layers
    return POLY_ATTENTION * attention, ROW_WISE * row_wise, EXACT_ATTENTION * attention


def poly_step(model, n, P, bandwidth, latency, prefix_scan):
    """Seconds per step, polynomial adjoint route. Along the ranks: every pass direction (3 per
    step: forward keys, backward keys, backward queries) fills a pipeline of P - 1 hops, each a
    head's pass on one rank plus the state's transfer. Prefix scan: each of the 3 L H states
    per step is scanned in log2 P steps, and every rank first adds up its own keys (half a
    forward pass, about 1/6 of a step's attention) before it can start."""
    layers, _, heads, dh, k = MODELS[model]
    attention, row_wise, _ = scaled_rates(model)
    compute = (attention + row_wise) * n / P
    state = k * (dh + 1) * 8  # bytes, double
    hop = latency + state / bandwidth
    if P == 1:
        return compute, 0.0
    if prefix_scan:
        communication = 3 * layers * heads * math.ceil(math.log2(P)) * hop
        return compute + attention * n / P / 6 + communication, communication
    head_pass = attention * n / P / (3 * layers * heads)
    fill = 3 * (P - 1) * (head_pass + hop)
    return compute + fill, 3 * (P - 1) * hop


def exact_step(model, n, P, bandwidth, latency, balanced):
    """Seconds per step, ring exact attention in float. Causal work per rank: contiguous shards
    leave the last rank P - 1/2 blocks of (n/P)^2 pairs out of the P/2 average; balanced
    (zig-zag) shards give every rank the average. A block's keys and values (forward) and with
    their gradients (backward) move once per ring step, overlapped with that step's compute:
    the step is communication-bound when the transfer outlasts the compute."""
    layers, d_model, _, _, _ = MODELS[model]
    _, row_wise, exact = scaled_rates(model)
    pair = 2 * exact  # core-s per (query, key) pair over the whole step: causal n^2 / 2 pairs
    block = pair * (n / P) ** 2
    blocks = P / 2 if balanced else P - 0.5
    compute = block * blocks + row_wise * n / P
    if P == 1:
        return compute, 0.0
    per_layer_transfer = 6 * (n / P) * d_model * 4 / bandwidth + 2 * latency  # K, V; K, V, dK, dV
    per_layer_block = block / layers
    exposed = max(0.0, per_layer_transfer - per_layer_block)  # what the block's compute cannot hide
    return compute + (P - 1) * layers * exposed, (P - 1) * layers * per_layer_transfer


def thresholds(model, n, bandwidth, latency):
    """Where communication starts to dominate: the ranks at which the polynomial chain's pipeline
    delay, and its transfers alone, equal its compute; the shard length below which a ring
    step's transfer outlasts its compute."""
    layers, d_model, heads, dh, k = MODELS[model]
    attention, row_wise, exact = scaled_rates(model)
    delay_ranks = 1 + layers * heads * (attention + row_wise) / attention
    hop = latency + k * (dh + 1) * 8 / bandwidth
    transfer_ranks = math.sqrt((attention + row_wise) * n / (3 * hop))
    ring_rows = 6 * d_model * 4 / (bandwidth * 2 * exact / layers)
    return delay_ranks, transfer_ranks, ring_rows


def fmt(seconds):
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 100:
        return f"{seconds:.1f} s"
    if seconds < 36000:
        return f"{seconds:.0f} s"
    return f"{seconds / 3600:.0f} h"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bandwidth", type=float, default=25e9, help="bytes/s per link")
    parser.add_argument("--latency", type=float, default=2e-6, help="seconds per message")
    args = parser.parse_args()
    ranks = [1, 4, 16, 64, 256, 1024, 4096]
    print(f"Network: {args.bandwidth / 1e9:g} GB/s per link, {args.latency * 1e6:g} us per message; "
          "one core per rank.\n")
    for model in MODELS:
        layers, d_model, heads, dh, k = MODELS[model]
        print(f"**{model}** ({layers} layers, d_model {d_model}, {heads} heads of d_h {dh}, "
              f"g 7, k {k}): seconds per step\n")
        print("| n | method | " + " | ".join(f"P = {p}" for p in ranks) + " |")
        print("|---|---|" + "---|" * len(ranks))
        for n_log in (20, 22, 24):
            n = 2 ** n_log
            rows = [
                ("poly, states along the ranks (built)", lambda p: poly_step(model, n, p, args.bandwidth, args.latency, False)),
                ("poly, prefix scan (not built)", lambda p: poly_step(model, n, p, args.bandwidth, args.latency, True)),
                ("exact ring, contiguous (built)", lambda p: exact_step(model, n, p, args.bandwidth, args.latency, False)),
                ("exact ring, balanced (not built)", lambda p: exact_step(model, n, p, args.bandwidth, args.latency, True)),
            ]
            for name, step in rows:
                cells = []
                for p in ranks:
                    total, communication = step(p)
                    cells.append(fmt(total))
                print(f"| 2^{n_log} | {name} | " + " | ".join(cells) + " |")
        print()
        for n_log in (20, 24):
            delay, transfer, rows = thresholds(model, 2 ** n_log, args.bandwidth, args.latency)
            print(f"- n = 2^{n_log}: the chain's pipeline delay equals its compute at P = {delay:.0f}, "
                  f"its state transfers alone at P = {transfer:.0f}; a ring step's transfer outlasts "
                  f"its compute below {rows:.1f} rows per rank.")
        print()


if __name__ == "__main__":
    main()
