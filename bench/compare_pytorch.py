#!/usr/bin/env python3
"""Causal multi-head attention, forward + backward, in PyTorch eager (CPU) against polygrad.

The same problem in both: H = 4 heads of d_h = 16, float32, causal, unit q and k rows per head
and scale 2 (QK normalisation with tau = 2, as in polygrad_bench), n = 4096, 8192, 16384.
PyTorch runs the textbook eager attention (S = c q k^T, masked softmax, P v) and its autograd
backward, one head at a time (the n x n buffers of all four heads at once would need ~20 GB);
polygrad's exact and polynomial paths are timed by polygrad_bench, run by this script with a
filter and --benchmark_format=json, in the same run, and -- when the Python module is built
(--python-path) -- the same calls through polygrad.torch.attention (forward + backward of a
[1, H, n, d_h] tensor), against polygrad_bench's times.

Fairness: torch.set_num_threads(2), because polygrad_bench uses the two cores this machine has
(OpenMP's default); on a machine with more cores set OMP_NUM_THREADS to match --threads.

    /usr/bin/python3 bench/compare_pytorch.py [--bench build-bench/bench/polygrad_bench] [--degree 4]

Exits 0 with "skipped: python3-torch is not installed" when torch cannot be imported.
"""

import argparse
import json
import os
import subprocess
import sys
import time

HEADS, HEAD_DIM, SCALE = 4, 16, 2.0


def torch_time(torch, n, repeats):
    """Median seconds of one forward + backward over all heads, and the outputs' sanity."""
    gen = torch.Generator().manual_seed(n)
    times = []
    for _ in range(repeats):
        total = 0.0
        for _head in range(HEADS):
            q = torch.nn.functional.normalize(torch.randn(n, HEAD_DIM, generator=gen), dim=1)
            k = torch.nn.functional.normalize(torch.randn(n, HEAD_DIM, generator=gen), dim=1)
            v = torch.randn(n, HEAD_DIM, generator=gen)
            d_o = torch.randn(n, HEAD_DIM, generator=gen)
            for t in (q, k, v):
                t.requires_grad_(True)
            mask = torch.ones(n, n, dtype=torch.bool).triu_(1)  # built outside the timed part
            start = time.perf_counter()
            s = (q @ k.T) * SCALE
            s = s.masked_fill(mask, float("-inf"))
            o = torch.softmax(s, dim=-1) @ v
            o.backward(d_o)
            total += time.perf_counter() - start
            if not all(bool(torch.isfinite(t.grad).all()) for t in (q, k, v)):
                raise RuntimeError(f"PyTorch produced non-finite gradients at n = {n}")
            del s, o, mask
        times.append(total)
    times.sort()
    return times[len(times) // 2]


def polygrad_torch_time(torch, attention, n, method, degree, repeats):
    """Median seconds of one forward + backward through polygrad.torch.attention, on the inputs
    polygrad_bench uses (unit q and k rows, scale 2, so that R = 2 bounds every score)."""
    gen = torch.Generator().manual_seed(n)
    shape = (1, HEADS, n, HEAD_DIM)
    q = torch.nn.functional.normalize(torch.randn(shape, generator=gen), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(shape, generator=gen), dim=-1)
    v, d_o = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    for t in (q, k, v):
        t.requires_grad_(True)
    options = dict(causal=True, scale=SCALE, method=method)
    if method == "poly":
        options.update(route="adjoint", degree=degree, bound=SCALE)
    times = []
    for _ in range(repeats + 1):  # the first call warms up, as polygrad_bench's check does
        start = time.perf_counter()
        o = attention(q, k, v, **options)
        o.backward(d_o)
        times.append(time.perf_counter() - start)
        for t in (q, k, v):
            t.grad = None
    times = sorted(times[1:])
    return times[len(times) // 2]


def polygrad_times(bench, sizes, degree, repetitions):
    """{(method, n): median seconds} from polygrad_bench's JSON output."""
    n_alt = "|".join(str(n) for n in sizes)
    regex = (f"^BM_Attention(Exact|PolyAdjoint|PolyPaper)/n:({n_alt})/dh:{HEAD_DIM}/heads:{HEADS}/"
             f"causal:1/degree:(0|{degree})/")
    cmd = [bench, f"--benchmark_filter={regex}", "--benchmark_format=json"]
    if repetitions > 1:
        cmd += [f"--benchmark_repetitions={repetitions}", "--benchmark_report_aggregates_only=true"]
    print("running:", " ".join(cmd), flush=True)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
    result = {}
    for b in json.loads(out)["benchmarks"]:
        if b.get("error_occurred"):
            print(f"polygrad_bench error in {b['name']}: {b.get('error_message')}", file=sys.stderr)
            continue
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        name = b["run_name"]
        method = name.split("/")[0].replace("BM_Attention", "")
        n = int(name.split("/n:")[1].split("/")[0])
        result[(method, n)] = b["real_time"] * scale[b["time_unit"]]
    return result


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", default=os.path.join(root, "build-bench", "bench", "polygrad_bench"),
                        help="the polygrad_bench binary")
    parser.add_argument("--sizes", default="4096,8192,16384", help="comma-separated n")
    parser.add_argument("--degree", type=int, default=4, choices=(4, 5),
                        help="polynomial degree at d_h 16 (registered: 4 and 5)")
    parser.add_argument("--repetitions", type=int, default=1, help="runs per size (median)")
    parser.add_argument("--torch-repetitions", type=int, default=None,
                        help="runs of PyTorch eager per size (default: --repetitions; each takes "
                             "minutes at n = 16384)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--python-path", default=os.path.join(root, "build", "python"),
                        help="where the polygrad Python package was built (timed through "
                             "polygrad.torch when it imports)")
    args = parser.parse_args()

    try:
        import torch
    except ImportError:
        # Debian's package is visible to the system interpreter only (/usr/bin/python3).
        print(f"skipped: python3-torch is not installed (not importable by {sys.executable}; "
              "apt-get install python3-torch, then run with /usr/bin/python3)")
        return 0

    sizes = [int(s) for s in args.sizes.split(",")]
    torch.set_num_threads(args.threads)
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"H = {HEADS}, d_h = {HEAD_DIM}, causal, float32, forward + backward")
    if not os.access(args.bench, os.X_OK):
        print(f"error: {args.bench} is not an executable; build polygrad_bench first "
              "(cmake -DPOLYGRAD_BUILD_BENCHMARKS=ON) or pass --bench", file=sys.stderr)
        return 1
    poly = polygrad_times(args.bench, sizes, args.degree, args.repetitions)

    sys.path.insert(0, args.python_path)
    try:
        from polygrad.torch import attention
    except ImportError as e:
        print(f"polygrad.torch not timed: {e} (build with -DPOLYGRAD_BUILD_PYTHON=ON and pass "
              f"--python-path)")
        attention = None

    header = (f"{'n':>7} {'torch s':>9} {'exact s':>9} {'adjoint s':>10} {'paper s':>9} "
              f"{'torch/exact':>12} {'torch/adjoint':>14} {'torch/paper':>12}")
    if attention:
        header += f" {'via-torch exact s':>18} {'/C++':>6} {'via-torch adjoint s':>20} {'/C++':>6}"
    print(header)
    for n in sizes:
        t = torch_time(torch, n, args.torch_repetitions or args.repetitions)
        e, a, p = (poly.get((m, n), float("nan")) for m in ("Exact", "PolyAdjoint", "PolyPaper"))
        line = (f"{n:>7} {t:>9.3f} {e:>9.3f} {a:>10.3f} {p:>9.3f} {t / e:>12.2f} {t / a:>14.2f} "
                f"{t / p:>12.2f}")
        if attention:
            te = polygrad_torch_time(torch, attention, n, "exact", args.degree, args.repetitions)
            ta = polygrad_torch_time(torch, attention, n, "poly", args.degree, args.repetitions)
            line += f" {te:>18.3f} {te / e:>6.3f} {ta:>20.3f} {ta / a:>6.3f}"
        print(line, flush=True)
    print(f"(poly: degree {args.degree}; ratios > 1 mean polygrad is faster; /C++ is the time "
          f"through polygrad.torch over polygrad_bench's)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
