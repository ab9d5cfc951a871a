#!/usr/bin/env python3
"""Causal attention, forward + backward, float32 on the CPU: PyTorch against polygrad, fairly.

Sides (--sides, each timed in a process of its own, on the same inputs):
  sdpa        torch.nn.functional.scaled_dot_product_attention, the backend PyTorch picks
              (PyTorch 2.x: a fused flash-attention CPU kernel; the kernels that ran are printed)
  sdpa-math   the same function held to its math backend (scores materialised, autograd backward)
  eager       textbook eager attention (S = c q k^T, masked softmax, P v, autograd), one head at a
              time, run by --eager-python (Debian's /usr/bin/python3 with PyTorch 1.13)
  exact       polygrad's exact attention through polygrad.torch.scaled_dot_product_attention
  poly        polygrad's polynomial method, adjoint route, the degree certified for --epsilon at
              R = 2 (the inputs' bound)
  based       flash-linear-attention's chunked PyTorch implementation of Based attention
              (fla.ops.based.naive_chunk_based: the degree-2 Taylor feature map 1 + s + s^2 / 2,
              normalised, causal), if the package imports
  taylor2     polygrad's polynomial method with that same map (family taylor, degree 2), adjoint
              route

The sides compute two functions: softmax attention (sdpa, sdpa-math, eager, exact and, within its
certified error, poly) and degree-2 Taylor attention (based, taylor2); each side is compared with
the first side of its function.

The inputs: heads of width d_h with H d_h = --widths, unit query and key rows per head and scale 2
(QK normalisation with tau = 2, so every score lies in [-2, 2]), values and the output gradient
standard normal; written once per point as .npy files that every side loads.

Fairness: every side uses --threads threads (torch.set_num_threads and OMP_NUM_THREADS); a
PyTorch peer runs with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from its environment (they
can slow a BLAS several times) and measures its own 2048^3 float GEMM rate, printed beside its
time. Each side is warmed up with one call, then timed --repeats times (the median is reported);
--rounds > 1 runs the sides in turn that many times, alternating their order, against drift.
Every side's output and gradients are compared with the first side's (the largest relative
difference, max |a - b| / max |b| over o, dq, dk and dv). A side is skipped where its predicted
time exceeds --time-limit or its predicted memory --memory-limit (from the previous size).

    venv/bin/python bench/compare_pytorch.py --head-dims 8,16,64 --widths 64 \\
        --sizes 1024,4096,16384,65536 --csv out/compare.csv
"""

import argparse
import csv
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

SCALE = 2.0  # = tau = R: the inputs' q and k rows have unit norm
SIDES = ("sdpa", "sdpa-math", "eager", "exact", "poly", "based", "taylor2")
PEERS = ("sdpa", "sdpa-math", "eager", "based")
QUADRATIC = ("sdpa", "sdpa-math", "eager", "exact")
TAYLOR2 = ("based", "taylor2")  # the sides that compute degree-2 Taylor attention
TENSORS = ("o", "dq", "dk", "dv")


# ---------------------------------------------------------------------------------------------
# Worker: one side, one point, in its own process.

def gemm_rate(torch, size=2048, repeats=5):
    """GFLOP/s of this process's float32 size^3 matrix product (the median of repeats)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def eager_attention(torch, q, k, v, scale):
    """softmax(scale q k^T + causal mask) v, head by head ([1, H, n, d] each): the n x n
    buffers of one head at a time."""
    n = q.shape[-2]
    later = torch.ones(n, n, dtype=torch.bool).triu_(1)
    heads = []
    for h in range(q.shape[1]):
        s = (q[0, h] @ k[0, h].T) * scale
        heads.append(torch.softmax(s.masked_fill(later, float("-inf")), dim=-1) @ v[0, h])
    return torch.stack(heads).unsqueeze(0)


def attention_call(side, torch, args):
    """The function of (q, k, v) that `side` times, and the polygrad options it passes (none for
    the peers)."""
    if side in ("sdpa", "sdpa-math"):
        sdpa = torch.nn.functional.scaled_dot_product_attention
        if side == "sdpa":
            return lambda q, k, v: sdpa(q, k, v, is_causal=True, scale=SCALE), {}
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def math_backend(q, k, v):
            with sdpa_kernel(SDPBackend.MATH):
                return sdpa(q, k, v, is_causal=True, scale=SCALE)
        return math_backend, {}
    if side == "eager":
        return lambda q, k, v: eager_attention(torch, q, k, v, SCALE), {}
    if side == "based":
        from fla.ops.based.naive import naive_chunk_based
        # It scales q by d_h^-1/2 itself: q is scaled so that its scores are SCALE q . k (one
        # elementwise product per call, timed with it).
        factor = SCALE * q_width(args) ** 0.5
        return lambda q, k, v: naive_chunk_based(q * factor, k, v), {}
    import polygrad.torch as pt
    if side == "taylor2":
        options = dict(method="poly", route="adjoint", family="taylor", degree=2, bound=SCALE)
        return (lambda q, k, v: pt.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                scale=SCALE, **options)), options
    if side == "exact":
        return (lambda q, k, v: pt.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                  scale=SCALE)), {}
    options = dict(method="poly", route="adjoint", bound=SCALE)
    options.update(dict(degree=args.degree) if args.degree else dict(epsilon=args.epsilon))
    return (lambda q, k, v: pt.scaled_dot_product_attention(q, k, v, is_causal=True, scale=SCALE,
                                                            **options)), options


def q_width(args):
    import numpy as np
    return np.load(os.path.join(args.inputs, "q.npy"), mmap_mode="r").shape[-1]


def kernels_that_ran(torch, call, q, k, v, d_o):
    """The attention operators of one forward + backward, by PyTorch's profiler."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        call(q, k, v).backward(d_o)
    words = ("attention", "flash", "softmax")
    return sorted({e.key for e in prof.key_averages() if any(w in e.key for w in words)})


def worker(args):
    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    q, k, v, d_o = (torch.from_numpy(np.load(os.path.join(args.inputs, f"{name}.npy")))
                    for name in ("q", "k", "v", "do"))
    for t in (q, k, v):
        t.requires_grad_(True)
    call, options = attention_call(args.worker, torch, args)
    report = dict(side=args.worker, torch=torch.__version__, threads=torch.get_num_threads())
    if args.worker in PEERS:
        report["gemm_gflops"] = gemm_rate(torch)
    # Warm-up: one call, profiled where it is PyTorch's attention (the profile names the kernels).
    if args.worker in ("sdpa", "sdpa-math"):
        report["kernels"] = kernels_that_ran(torch, call, q, k, v, d_o)
    else:
        call(q, k, v).backward(d_o)
    if args.worker in ("poly", "taylor2"):
        import polygrad.torch as pt
        _, plans = pt.attention_with_plans(q.detach(), k.detach(), v.detach(), causal=True,
                                           scale=SCALE, **options)
        report["degree"] = plans[0][0].degree
        report["plan"] = plans[0][0].describe()
    times = []
    for _ in range(args.repeats):
        for t in (q, k, v):
            t.grad = None
        start = time.perf_counter()
        o = call(q, k, v)
        o.backward(d_o)
        times.append(time.perf_counter() - start)
    report["times"] = times
    report["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    for name, t in zip(TENSORS, (o, q.grad, k.grad, v.grad)):
        np.save(os.path.join(args.out, f"{name}.npy"), t.detach().numpy())
    print(json.dumps(report))
    return 0


# ---------------------------------------------------------------------------------------------
# Driver: inputs, sides in turn, comparison, table.

def write_inputs(directory, heads, n, head_dim, seed):
    import numpy as np
    rng = np.random.default_rng(seed)

    def unit_rows(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)
    shape = (1, heads, n, head_dim)
    arrays = dict(q=unit_rows(rng.standard_normal(shape)), k=unit_rows(rng.standard_normal(shape)),
                  v=rng.standard_normal(shape), do=rng.standard_normal(shape))
    for name, a in arrays.items():
        np.save(os.path.join(directory, f"{name}.npy"), a.astype(np.float32))


def peer_environment(threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        env.pop(name, None)
    return env


def run_side(side, args, inputs, out, time_limit):
    python = args.eager_python if side == "eager" else sys.executable
    command = [python, os.path.abspath(__file__), "--worker", side, "--inputs", inputs,
               "--out", out, "--threads", str(args.threads), "--repeats", str(args.repeats),
               "--epsilon", str(args.epsilon), "--degree", str(args.degree)]
    env = (peer_environment(args.threads) if side in PEERS
           else dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True,
                              timeout=time_limit)
    except subprocess.TimeoutExpired:
        return dict(side=side, error=f"over {time_limit:.0f} s")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        return dict(side=side, error=f"exit {done.returncode}: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def largest_difference(a_dir, b_dir):
    """max over o, dq, dk, dv of max |a - b| / max |b|."""
    import numpy as np
    worst = 0.0
    for name in TENSORS:
        a = np.load(os.path.join(a_dir, f"{name}.npy")).astype(np.float64)
        b = np.load(os.path.join(b_dir, f"{name}.npy")).astype(np.float64)
        worst = max(worst, float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)))
    return worst


def predicted(side, previous, n, heads, head_dim):
    """(seconds per call, bytes) predicted from the side's previous size, or None."""
    if previous is None:
        return None, None
    seconds, n0 = previous
    growth = (n / n0) ** 2 if side in QUADRATIC else n / n0
    if side == "sdpa-math":
        memory = 4 * heads * n * n * 4  # scores, probabilities and their gradients, all heads
    elif side == "eager":
        memory = 4 * n * n * 4  # the same for one head
    elif side == "based":
        memory = 8 * heads * n * head_dim**3 * 4 // 256  # per chunk a d_h^3 state, kept for autograd
    else:
        memory = 16 * heads * n * head_dim * 4
    return seconds * growth, memory


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n")[1:]))
    parser.add_argument("--sides", default=",".join(SIDES),
                        help="comma-separated; the first side of each function is the "
                             "reference of the others")
    parser.add_argument("--head-dims", default="8,16,64")
    parser.add_argument("--widths", default="64", help="H d_h, comma-separated")
    parser.add_argument("--sizes", default="1024,4096,16384")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per side (median)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="processes per side and point, in alternating order")
    parser.add_argument("--epsilon", type=float, default=1e-3,
                        help="poly: the certified relative error that sets the degree")
    parser.add_argument("--degree", type=int, default=0, help="poly: a fixed degree instead")
    parser.add_argument("--eager-python", default="/usr/bin/python3",
                        help="the interpreter of the eager side (Debian's PyTorch 1.13)")
    parser.add_argument("--time-limit", type=float, default=600,
                        help="seconds a side may take at one point (all its calls)")
    parser.add_argument("--memory-limit", type=float, default=20, help="GiB")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--csv", help="also write the table here")
    parser.add_argument("--markdown", help="also write the table here, as the README shows it")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    sides = args.sides.split(",")
    unknown = set(sides) - set(SIDES)
    if unknown:
        parser.error(f"unknown sides {sorted(unknown)}; the sides are {', '.join(SIDES)}")
    avx512 = "avx512f" in open("/proc/cpuinfo").read()
    print(f"host: {os.cpu_count()} cores, AVX-512 {'yes' if avx512 else 'no'}; "
          f"{args.threads} threads on every side; OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE', '(unset)')} here, unset for the peers",
          flush=True)
    rows = []
    scratch = tempfile.mkdtemp(prefix="polygrad-compare-")
    try:
        for head_dim in (int(d) for d in args.head_dims.split(",")):
            for width in (int(w) for w in args.widths.split(",")):
                heads = width // head_dim
                previous = {side: None for side in sides}
                given_up = {}  # sides skipped at a smaller n, or that failed there
                for n in (int(s) for s in args.sizes.split(",")):
                    inputs = os.path.join(scratch, "inputs")
                    os.makedirs(inputs, exist_ok=True)
                    write_inputs(inputs, heads, n, head_dim, args.seed)
                    results = {side: [] for side in sides}
                    skipped = {}
                    for side in sides:
                        seconds, memory = predicted(side, previous[side], n, heads, head_dim)
                        if side in given_up:
                            skipped[side] = given_up[side]
                        elif seconds is not None and seconds * (args.repeats + 1) > args.time_limit:
                            skipped[side] = f"skipped: ~{seconds:.0f} s a call"
                        elif memory is not None and memory > args.memory_limit * 2**30:
                            skipped[side] = f"skipped: ~{memory / 2**30:.0f} GiB"
                        if side in skipped:  # and at every larger n
                            given_up[side] = skipped[side].replace("skipped: ~", "skipped: over ")
                    for round_ in range(args.rounds):
                        order = [s for s in sides if s not in skipped]
                        for side in (order if round_ % 2 == 0 else order[::-1]):
                            out = os.path.join(scratch, side)
                            os.makedirs(out, exist_ok=True)
                            results[side].append(run_side(side, args, inputs, out,
                                                          args.time_limit))
                    row = dict(head_dim=head_dim, heads=heads, n=n)
                    references = {}  # per function: the first side that computed it
                    for side in sides:
                        runs = [r for r in results[side] if "error" not in r]
                        if side in skipped or not runs:
                            row[side] = skipped.get(side) or results[side][0]["error"]
                            given_up.setdefault(side, "skipped: failed at a smaller n")
                            continue
                        seconds = statistics.median(t for r in runs for t in r["times"])
                        row[side] = seconds
                        previous[side] = (seconds, n)
                        first = runs[0]
                        if "gemm_gflops" in first:
                            row[f"{side} gemm GF/s"] = statistics.median(
                                r["gemm_gflops"] for r in runs)
                        for key in ("kernels", "degree", "torch"):
                            if key in first:
                                row[f"{side} {key}"] = first[key]
                        row[f"{side} peak GiB"] = max(r["peak_rss_gib"] for r in runs)
                        out = os.path.join(scratch, side)
                        reference = references.setdefault(side in TAYLOR2, side)
                        if reference != side:
                            row[f"{side} vs {reference}"] = largest_difference(
                                out, os.path.join(scratch, reference))
                    rows.append(row)
                    print_row(row, sides)
                    warn_about_slow_blas(row, sides)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown_table(rows, sides))
    if args.csv:
        columns = sorted({c for r in rows for c in r}, key=lambda c: (c not in ("head_dim", "heads", "n"), c))
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            w.writerows(rows)
    return 0


def markdown_table(rows, sides):
    """The rows as a Markdown table: seconds per side, the ratios of peers to polygrad, the peers'
    GEMM rates and each side's largest difference from its reference."""
    def seconds(value):
        if isinstance(value, str):
            if value.startswith("exit"):
                return "refused" if "PlanError" in value else "failed"
            return value.replace("skipped: ", "skipped, ")
        return f"{value:.3g} s" if value < 10 else f"{value:.1f} s"
    names = dict(sdpa="SDPA (fused)", eager="1.13 eager", **{"sdpa-math": "SDPA (math)"}, exact="polygrad exact",
                 poly="polygrad poly", based="FLA Based", taylor2="polygrad Taylor-2")
    ratios = [(peer, ours) for peer, ours in (("sdpa", "exact"), ("sdpa", "poly"),
                                              ("eager", "exact"), ("based", "taylor2"))
              if peer in sides and ours in sides]
    header = (["d_h x H", "n"] + [names.get(s, s) for s in sides]
              + [f"{peer} / {ours}" for peer, ours in ratios]
              + ["GEMM GFLOP/s (" + ", ".join(s for s in sides if s in PEERS) + ")",
                 "largest difference"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [f"{row['head_dim']} x {row['heads']}", str(row["n"])]
        for side in sides:
            text = seconds(row[side])
            if f"{side} degree" in row and not isinstance(row[side], str):
                text += f" (g {row[f'{side} degree']})"
            cells.append(text)
        for peer, ours in ratios:
            a, b = row.get(peer), row.get(ours)
            cells.append(f"{a / b:.2f}x" if isinstance(a, float) and isinstance(b, float) else "-")
        cells.append(", ".join(f"{row[f'{s} gemm GF/s']:.0f}" if f"{s} gemm GF/s" in row else "-"
                               for s in sides if s in PEERS))
        cells.append(", ".join(f"{key.split(' vs ')[0]} {value:.1e}" for key, value in row.items()
                               if " vs " in key) or "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def warn_about_slow_blas(row, sides):
    """A peer whose GEMM runs at under half the best peer's has a BLAS that is not at its best
    (Debian's PyTorch 1.13 on the reference BLAS runs ~6 GFLOP/s where OpenBLAS gives ~170)."""
    rates = {side: row[f"{side} gemm GF/s"] for side in sides if f"{side} gemm GF/s" in row}
    best = max(rates.values(), default=0)
    for side, rate in rates.items():
        if rate < 0.5 * best:
            print(f"    warning: {side}'s GEMM runs at {rate:.0f} GFLOP/s, under half of "
                  f"{best:.0f}: its BLAS is slowed (for Debian's PyTorch 1.13: apt-get install "
                  f"libopenblas0-pthread, which replaces the reference BLAS)", flush=True)


def print_row(row, sides):
    parts = [f"d_h {row['head_dim']:>2} H {row['heads']:>2} n {row['n']:>6}:"]
    for side in sides:
        value = row[side]
        if isinstance(value, str):
            parts.append(f"{side} {value}")
            continue
        text = f"{side} {value:.4f} s"
        extra = []
        if f"{side} gemm GF/s" in row:
            extra.append(f"GEMM {row[f'{side} gemm GF/s']:.0f} GF/s")
        if f"{side} degree" in row:
            extra.append(f"g {row[f'{side} degree']}")
        difference = [k for k in row if k.startswith(f"{side} vs ")]
        if difference:
            extra.append(f"diff {row[difference[0]]:.1e}")
        if extra:
            text += f" ({', '.join(extra)})"
        parts.append(text)
    for peer, ours_sides in (("sdpa", ("exact", "poly")), ("eager", ("exact", "poly")),
                             ("based", ("taylor2",))):
        for ours in ours_sides:
            a, b = row.get(peer), row.get(ours)
            if isinstance(a, float) and isinstance(b, float):
                parts.append(f"{peer}/{ours} {a / b:.2f}x")
    kernels = row.get("sdpa kernels")
    print("  ".join(parts), flush=True)
    if kernels:
        print(f"    sdpa ran: {', '.join(kernels)}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
