"""Shared fixtures: one local Ray instance per test session (starting Ray costs seconds)."""

from __future__ import annotations

import logging
import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One torch thread in this process: tiny test models gain nothing from two, and two OpenMP
    threads stall badly when the suite shares the cores with Ray workers or other processes."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with 2 CPUs and one *fake* GPU (scheduling only), shared by every Ray test."""
    from sdsearch.search.runner import _quiet_ray_env

    _quiet_ray_env()
    import ray

    ray.init(
        num_cpus=2,
        num_gpus=1,
        include_dashboard=False,
        object_store_memory=200 * 2**20,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    yield ray
    ray.shutdown()
