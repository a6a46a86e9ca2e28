"""Fixtures for the zoo tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Run on one intra-op thread: these tensors are small, and on a shared 2-core machine a
    second OpenMP thread mostly waits at barriers (10x slower passes were measured under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
