"""Every test starts from the same PyTorch seed, and plans with the fixed rate table."""

import os

import pytest
import torch

# "auto" decides by predicted seconds; with the fixed table (attention/rates.hpp) it decides alike
# on every machine, and no test writes a rate file into the home directory. (CTest sets it too.)
os.environ.setdefault("POLYGRAD_RATES", "table")


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(1234)
