"""Warm a worker before it takes its first job (:mod:`server.services.warmup`).

``worker_init`` is sent once per worker, before the consumer starts and, for a prefork pool,
before the pool's processes are forked, so they inherit what was imported and cached; it runs
in the main thread with no time limit (unlike ``worker_process_init``, house rule 12), and a job
that arrives meanwhile waits in its durable queue.  ``LUNGCDS_WARM_UP=false`` leaves it out.
"""

from __future__ import annotations

from typing import Any

from celery import signals

from server.services.warmup import warm_up


@signals.worker_init.connect
def _warm_up(sender: Any = None, **_: Any) -> None:
    settings = getattr(getattr(sender, "app", None), "settings", None)
    if settings is not None and settings.warm_up:
        warm_up(settings.ae_title)
