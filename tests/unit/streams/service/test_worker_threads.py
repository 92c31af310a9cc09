"""The worker leaves the cores to its scorer: once `run_worker` has set its limits, the OpenMP
pool of scikit-learn's k-means (the boundary mining) and every BLAS loaded by then run one thread
each. Importing the worker module loads them all (the mining window imports scikit-learn)."""

from __future__ import annotations

from threadpoolctl import threadpool_info

from streams.service.worker import one_thread_beside_the_scorer


def test_mining_and_blas_run_on_one_thread_once_the_worker_set_its_limits() -> None:
    apis = {lib["user_api"] for lib in threadpool_info()}
    assert {"openmp", "blas"} <= apis  # scikit-learn's libgomp and numpy's BLAS are loaded
    limits = one_thread_beside_the_scorer()
    try:
        assert {(lib["user_api"], lib["num_threads"]) for lib in threadpool_info()} == {
            ("openmp", 1),
            ("blas", 1),
        }
    finally:
        limits.restore_original_limits()
