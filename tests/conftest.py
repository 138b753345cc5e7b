"""Shared fixtures: one local Ray instance per test session (starting Ray costs seconds)."""

from __future__ import annotations

import logging
import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


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
