"""The base task: per-process resources created lazily on first use (house rule 12).

A task object is created once per worker process, so a cached property holds the database
engine and the weight store; nothing connects at import or in ``worker_process_init``.
"""

from __future__ import annotations

import logging
import os
from functools import cached_property

import SimpleITK as sitk
import torch
from celery import Task
from sqlalchemy.engine import Engine

from models.runtime import ModelProvider
from server.core.config import Settings
from server.core.db import make_engine

__all__ = ["LungcdsTask", "thread_budget"]

logger = logging.getLogger(__name__)


def thread_budget(settings: Settings, cores: int | None = None) -> int:
    """Intra-op threads for one worker process: the setting, or the cores shared by its concurrent tasks.

    torch and SimpleITK each start one thread per core by default; with several analyses running at
    once in a process (threads pool) that oversubscribes the cores, and every analysis slows down by
    the context switching on top of the sharing.
    """
    if settings.torch_threads:
        return settings.torch_threads
    return max(1, (cores or os.cpu_count() or 1) // settings.worker_concurrency)


class LungcdsTask(Task):
    """Base of every lungcds task: settings from the app, lazily created resources."""

    abstract = True

    @property
    def settings(self) -> Settings:
        """The settings of the app this worker was started with."""
        settings: Settings = self.app.settings
        return settings

    @cached_property
    def engine(self) -> Engine:
        """This process' database engine."""
        return make_engine(self.settings.database_url)

    @cached_property
    def models(self) -> ModelProvider:
        """The learned models of this process, loaded at first use (kept, or freed after each stage: see Settings).

        The process' thread budget is set here, once, before the first analysis computes anything.
        """
        threads = thread_budget(self.settings)
        torch.set_num_threads(threads)
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)  # type: ignore[no-untyped-call]
        logger.info("intra-op threads per worker process", extra={"threads": threads})
        return self.settings.model_provider()
