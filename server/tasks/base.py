"""The base task: per-process resources created lazily on first use (house rule 12).

A task object is created once per worker process, so a cached property holds the database
engine and the weight store; nothing connects at import or in ``worker_process_init``.
"""

from __future__ import annotations

from functools import cached_property

from celery import Task
from sqlalchemy.engine import Engine

from models.runtime import ModelProvider
from server.core.config import Settings
from server.core.db import make_engine

__all__ = ["LungcdsTask"]


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
        """The learned models, loaded at their first use in this process and kept."""
        return self.settings.model_provider()
