"""The command line: run | once | check-config | status.

Every FeedServiceError becomes a one-line message on stderr and an exit code:
2 for a bad configuration, 1 for anything else; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from feedservice import __version__
from feedservice.app import App, PassReport
from feedservice.config import (
    Config,
    load_config,
    parse_listen,
    resolve_config_path,
    summarize_config,
)
from feedservice.daemon import run_daemon
from feedservice.errors import ConfigError, FeedServiceError

log = logging.getLogger("feedservice")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # APScheduler logs every run of the dispatch job at INFO: keep the daemon's log readable
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        config = load_config(resolve_config_path(args.config, os.environ))
        if getattr(args, "listen", None):
            config = _with_listen(config, args.listen)
        command = args.command or "run"
        if command == "check-config":
            print(summarize_config(config))
            return 0
        if command == "once":
            return asyncio.run(_once(config, force=args.force))
        if command == "status":
            return asyncio.run(_status(config))
        return asyncio.run(run_daemon(config))
    except ConfigError as exc:
        print(f"feedservice: configuration error: {exc}", file=sys.stderr)
        return 2
    except FeedServiceError as exc:
        print(f"feedservice: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="feedservice",
        description="Publish your stories and watched feeds as Atom, RSS and JSON Feed.",
    )
    parser.add_argument("--version", action="version", version=f"feedservice {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        help="config file (default: $FEEDSERVICE_CONFIG or config/feedservice.yaml)",
    )
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", parents=[common], help="run the daemon: poll, publish, serve")
    run.add_argument("--listen", metavar="HOST:PORT", help="override service.listen")
    once = sub.add_parser("once", parents=[common], help="one full pass, then exit (cron)")
    once.add_argument(
        "--force",
        action="store_true",
        help="poll every source, not only the due ones (except gone or under Retry-After)",
    )
    sub.add_parser("check-config", parents=[common], help="validate the config and summarise it")
    sub.add_parser("status", parents=[common], help="a table of every source's health")
    parser.set_defaults(config=None)
    return parser


def _with_listen(config: Config, listen: str) -> Config:
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        raise ConfigError(str(exc), field="--listen") from exc
    service = replace(config.service, listen_host=host, listen_port=port)
    return replace(config, service=service)


async def _once(config: Config, *, force: bool) -> int:
    progress = _progress_printer()
    async with App(config, progress=progress) as app:
        report = await app.run_once(force=force)
    _print_pass(report)
    return 0


def _progress_printer() -> Callable[[int, int], None]:
    """A rich progress bar on a terminal; plain log lines otherwise."""
    if sys.stderr.isatty():
        from rich.progress import Progress

        bar = Progress(transient=True)
        task = bar.add_task("polling", total=None)
        bar.start()

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)
            if done >= total:
                bar.stop()

        return update

    step = 0

    def plain(done: int, total: int) -> None:
        nonlocal step
        if (total >= 100 and done * 10 // total > step) or done == total:
            step = done * 10 // total
            log.info("polled %d/%d sources", done, total)

    return plain


def _print_pass(report: PassReport) -> None:
    print(
        f"polled {len(report.polled)} sources: {report.new} new, {report.changed} changed entries, "
        f"{len(report.failed)} failed; wrote {len(report.written)} files; "
        f"{report.matches} matches, {report.notified} notifications"
    )
    for r in report.polled:
        for err in r.errors:
            print(f"  {r.source}: {err}", file=sys.stderr)
    for err in report.errors:
        print(f"  {err}", file=sys.stderr)


async def _status(config: Config) -> int:
    async with App(config, read_only=True) as app:
        states = app.source_states()
    now = datetime.now(UTC)
    headers = ["source", "last success", "HTTP", "failures", "next poll", "why", "entries", "error"]
    rows = []
    for s in states:
        rows.append(
            [
                s.name,
                _ago(s.last_success_at, now),
                "" if s.last_status is None else str(s.last_status),
                "gone" if s.gone else str(s.failures),
                "never" if s.gone else _until(s.next_check_at, now),
                s.next_check_reason,
                str(s.entries),
                (s.last_error or "")[:80],
            ]
        )
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(*headers)
        for row in rows:
            table.add_row(*row)
        Console().print(table)
    else:
        widths = [
            max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
            for i, h in enumerate(headers)
        ]
        print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _ago(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "never"
    return _span((now - when).total_seconds()) + " ago"


def _until(when: datetime, now: datetime) -> str:
    seconds = (when - now).total_seconds()
    return "due now" if seconds <= 0 else "in " + _span(seconds)


def _span(seconds: float) -> str:
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"
