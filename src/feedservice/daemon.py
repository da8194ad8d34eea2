"""``feedservice run``: the HTTP server and the scheduler around one App, until a signal.

SIGTERM / SIGINT / SIGHUP stop the scheduler, let the pass in flight finish (at most
SHUTDOWN_GRACE seconds) and close everything, so the process exits 0 within 10 s.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from feedservice.app import App
from feedservice.config import Config
from feedservice.errors import FeedServiceError
from feedservice.scheduler import build_scheduler
from feedservice.server import build_web_app, request_logger

log = logging.getLogger("feedservice")

SHUTDOWN_GRACE = 7.0  # seconds to finish in-flight work on SIGTERM (we promise exit within 10 s;
# a pass that outlives it is cancelled and gets CANCEL_GRACE more, then the server closes)
CANCEL_GRACE = 1.5  # seconds for a pass cancelled after the grace to record what it did


async def run_daemon(config: Config) -> int:
    """Serve and poll until SIGTERM, SIGINT or SIGHUP; returns the exit code (0).

    Raises FeedServiceError when the store cannot be opened or the port is taken."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # SIGHUP too (a closed terminal, a log rotation script): its default action kills the
    # process on the spot, cutting a pass off without the grace period below.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    async with App(config) as app:
        runner = web.AppRunner(build_web_app(app), access_log=None, logger=request_logger())
        await runner.setup()
        svc = config.service
        site = web.TCPSite(runner, svc.listen_host, svc.listen_port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise FeedServiceError(
                f"cannot listen on {svc.listen_host}:{svc.listen_port}: {exc.strerror}"
            ) from exc
        for address in runner.addresses:
            log.info(
                "serving on http://%s:%s/ (public URL %s)", address[0], address[1], svc.base_url
            )
        scheduler = build_scheduler(app)
        scheduler.start()
        await stop.wait()
        log.info("shutting down: finishing in-flight work")
        # Paused, not shut down: APScheduler's shutdown cancels the running job at once, so
        # a delivery one second from its answer would be cut off and sent again after the
        # restart. The pass gets the grace period; only then is it cancelled (it still
        # monitors and publishes what it stored, see App.run_pass).
        scheduler.pause()
        finished = await app.drain(SHUTDOWN_GRACE)
        scheduler.shutdown(wait=False)
        if not finished:
            log.warning(
                "in-flight work did not finish within %.0fs; stopping anyway", SHUTDOWN_GRACE
            )
            await app.drain(CANCEL_GRACE)  # the cancelled pass finishes its bookkeeping
        await runner.cleanup()
    return 0
