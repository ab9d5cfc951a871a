"""polygrad releases the GIL while it computes: other Python threads run during a call."""

import threading
import time

import torch

import polygrad.torch as pt
from reference import random_qkv


def test_other_threads_run_while_attention_computes():
    q, k, v = random_qkv((1, 4, 8192, 16), dtype=torch.float32, requires_grad=False)
    call = {}

    def work():
        call["start"] = time.perf_counter()
        pt.attention(q, k, v, threads=1)
        call["end"] = time.perf_counter()

    worker = threading.Thread(target=work)
    ticks = [time.perf_counter()]
    worker.start()
    while worker.is_alive():
        ticks.append(time.perf_counter())
    worker.join()
    duration = call["end"] - call["start"]
    during = [t for t in ticks if call["start"] <= t <= call["end"]]
    assert duration > 0.05  # long enough to tell: a held GIL would stall this thread throughout
    gaps = [b - a for a, b in zip([call["start"]] + during, during + [call["end"]])]
    assert max(gaps) < 0.5 * duration
