"""Same params, same bits: seeds from ``base.seed``, CPU threads from ``base.threads``."""

from __future__ import annotations

import os
import random
import sys

import numpy as np
import threadpoolctl

# torch (~2.2 s, bench/import_costs.py) is imported inside seed_everything: prepare_movielens and
# gen_queries import this module for pin_threads and never use torch.

# Kept alive for the process: threadpoolctl restores the old limits when its object is collected.
_thread_limits: list[threadpoolctl.threadpool_limits] = []
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pin_threads(threads: int) -> None:
    """Run torch, FAISS and the BLAS/OpenMP pools on exactly ``threads`` threads.

    Parallel reductions sum in an order that depends on the thread count, so a fit is
    bit-identical across machines only when the count is fixed by params, not by the core count
    (measured: FAISS residual k-means gives different level-2 codes with 1 and 2 threads).
    Libraries loaded later read the environment variables when they load (torch, libgomp), as
    do child processes, so nothing heavy is imported here; those already loaded are set directly.
    """
    for name in _THREAD_ENV:
        os.environ[name] = str(threads)
    _thread_limits.append(threadpoolctl.threadpool_limits(limits=threads))
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
