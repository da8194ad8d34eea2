"""APScheduler 3.x wiring only: one job that dispatches the sources that are due.

The store knows what is due (``next_check_at`` per source, jittered when it is set),
so the job just asks the app to poll whatever has come due; the same
``poll_source(id)`` could later run on many workers.
"""

from __future__ import annotations

from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from feedservice.app import App

DISPATCH_JOB_ID = "dispatch-due-sources"


def build_scheduler(app: App) -> AsyncIOScheduler:
    """A scheduler (not started) whose one job runs ``app.dispatch_due`` every
    ``service.dispatch_every`` seconds, starting now; runs never overlap or pile up."""
    scheduler = AsyncIOScheduler(timezone=UTC)
    scheduler.add_job(
        app.dispatch_due,
        "interval",
        seconds=app.config.service.dispatch_every,
        id=DISPATCH_JOB_ID,
        next_run_time=datetime.now(UTC),
        max_instances=1,
        coalesce=True,
        misfire_grace_time=None,
    )
    return scheduler
