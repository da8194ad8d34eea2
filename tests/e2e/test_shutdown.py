"""SIGTERM while a pass is in flight: what the pass gathered is kept (issue 3, item 6);
SIGKILL there: what the pass stored is matched after the restart.

The daemon is a subprocess; one source answers at once, another hangs past the shutdown
grace, so the pass is still polling when the signal arrives.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.e2e.daemon import Daemon, free_port, watch_site
from tests.test_app_monitor import FOLLOW_UP_ITEM, STORY, UNRELATED_ITEM, wire

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


class Origin:
    """``/wire.xml`` and ``/slow.xml`` on one loopback server. Once ``follow_up`` is set,
    the wire serves the follow-up, and the first request to the slow feed after that hangs
    (``hanging`` is set): the pass that stored the follow-up is stuck there."""

    def __init__(self) -> None:
        self.follow_up = False
        self.served_follow_up = threading.Event()
        self.hanging = threading.Event()
        self.release = threading.Event()
        self.hooks: list[str] = []  # idempotency keys of the webhook posts to /hook


@pytest.fixture
def origin() -> Iterator[tuple[Origin, str]]:
    state = Origin()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/wire.xml":
                follow_up = state.follow_up
                items = [UNRELATED_ITEM, FOLLOW_UP_ITEM] if follow_up else [UNRELATED_ITEM]
                body = wire(items).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/rss+xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if follow_up:
                    state.served_follow_up.set()
                return
            # the slow feed: polled beside the wire, so wait a moment for the wire's answer
            if state.follow_up and state.served_follow_up.wait(2):
                state.hanging.set()
                state.release.wait(60)
                return
            body = wire([]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.hooks.append(self.headers["Idempotency-Key"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}"
    state.release.set()
    server.shutdown()
    server.server_close()


def test_sigterm_mid_pass_keeps_the_matches_of_what_was_polled(
    tmp_path: Path, origin: tuple[Origin, str]
) -> None:
    # Found by a signal test: SIGTERM cancelled the pass at once, and the entries it had
    # stored but not yet handed to the monitor were never matched (after a restart they are
    # not new any more): the watch silently missed the follow-up.
    state, base = origin
    port = free_port()
    config = watch_site(
        tmp_path,
        port,
        story=STORY,
        sources={"wire": f"{base}/wire.xml", "slow": f"{base}/slow.xml"},
    )
    daemon = Daemon(config, port, tmp_path).start()
    try:
        daemon.wait_for("hq.json", lambda r: r.status == 200)  # the watch's backlog pass is done
        state.follow_up = True
        assert state.hanging.wait(20), daemon.log()
        time.sleep(1)  # the wire's answer is parsed and stored meanwhile
        # the pass outlives the grace period and is cancelled; this test is about what is
        # kept, not how fast (test_daemon checks the exit time)
        code, _ = daemon.stop(signal.SIGTERM, timeout=30)
        assert code == 0, daemon.log()
    finally:
        daemon.kill()
    state.release.set()

    again = Daemon(config, port, tmp_path).start()
    try:
        time.sleep(2)  # passes after the restart poll the wire again: nothing new for them
        reply = again.get("hq.json")
        code, _ = again.stop(signal.SIGTERM)
        assert code == 0
    finally:
        again.kill()
    assert FOLLOW_UP_ITEM[1].encode() in reply.body, again.log()


def _rows(db: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db, timeout=10)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def test_sigkill_after_storing_before_matching_is_matched_after_restart_once(
    tmp_path: Path, origin: tuple[Origin, str]
) -> None:
    # The pass stores the follow-up, then hangs on the slow feed: the entries it gathered
    # reach the monitor only when the pass (or its batch) ends. SIGKILL there leaves the
    # follow-up stored and unmatched; after the restart it is not new to the poller.
    state, base = origin
    port = free_port()
    config = watch_site(
        tmp_path,
        port,
        story=STORY,
        sources={"wire": f"{base}/wire.xml", "slow": f"{base}/slow.xml"},
        notify=[f"webhook: {base}/hook"],
    )
    db = tmp_path / "var" / "feedservice.sqlite3"
    title = FOLLOW_UP_ITEM[1]
    daemon = Daemon(config, port, tmp_path).start()
    try:
        daemon.wait_for("hq.json", lambda r: r.status == 200)  # the watch's backlog pass is done
        state.follow_up = True
        assert state.hanging.wait(20), daemon.log()
        deadline = time.monotonic() + 20
        while not _rows(db, "SELECT 1 FROM entries WHERE title = ?", title):
            assert time.monotonic() < deadline, daemon.log()
            time.sleep(0.05)
        daemon.kill()  # SIGKILL: nothing more runs
    finally:
        daemon.kill()
    # the premise: stored, never matched
    assert _rows(db, "SELECT entry_id FROM matches WHERE watch = 'hq'") == [], daemon.log()
    state.release.set()

    again = Daemon(config, port, tmp_path).start()
    try:
        again.wait_for("hq.json", lambda r: title.encode() in r.body)
        deadline = time.monotonic() + 20
        while not state.hooks and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2)  # several more passes: nothing is matched or sent again
        code, _ = again.stop(signal.SIGTERM)
        assert code == 0
    finally:
        again.kill()
    assert len(state.hooks) == 1, again.log()
    assert len(_rows(db, "SELECT entry_id FROM matches WHERE watch = 'hq'")) == 1


class SlowHook:
    """A webhook receiver that takes two seconds to acknowledge."""

    def __init__(self) -> None:
        self.attempts: list[str] = []
        self.arrived = threading.Event()


@pytest.fixture
def slow_hook() -> Iterator[tuple[SlowHook, str]]:
    state = SlowHook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.attempts.append(self.headers["Idempotency-Key"])
            state.arrived.set()
            time.sleep(2)
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def test_sigterm_during_a_delivery_lets_it_finish_and_it_is_not_sent_again(
    tmp_path: Path, slow_hook: tuple[SlowHook, str]
) -> None:
    # Found by a signal test: the scheduler's shutdown cancelled the pass at once, so the
    # grace period never applied; a delivery two seconds from its acknowledgement was cut
    # off and, after the restart, sent again.
    state, url = slow_hook
    port = free_port()
    (tmp_path / "wire.xml").write_text(wire([UNRELATED_ITEM]))
    config = watch_site(
        tmp_path, port, story=STORY, sources={"wire": "wire.xml"}, notify=[f"webhook: {url}"]
    )
    daemon = Daemon(config, port, tmp_path).start()
    try:
        daemon.wait_for("hq.json", lambda r: r.status == 200)  # the watch's backlog pass is done
        (tmp_path / "wire.xml").write_text(wire([UNRELATED_ITEM, FOLLOW_UP_ITEM]))
        assert state.arrived.wait(20), daemon.log()
        code, _ = daemon.stop(signal.SIGTERM)
        assert code == 0, daemon.log()
    finally:
        daemon.kill()

    again = Daemon(config, port, tmp_path).start()
    try:
        time.sleep(2)  # several dispatch ticks: a due notification would be sent by now
        code, _ = again.stop(signal.SIGTERM)
        assert code == 0
    finally:
        again.kill()
    assert len(state.attempts) == 1, again.log()


@pytest.fixture
def stuck_smtp() -> Iterator[tuple[threading.Event, int]]:
    """An SMTP server that takes the message and then never answers; the event is set when
    the message has arrived."""
    arrived = threading.Event()
    release = threading.Event()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def converse(conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"220 hi\r\n")
            while line := lines.readline():
                if line[:4].upper() == b"DATA":
                    conn.sendall(b"354 go on\r\n")
                    while lines.readline() not in (b".\r\n", b""):
                        pass
                    arrived.set()
                    release.wait(60)
                    return
                conn.sendall(b"250 ok\r\n")

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                threading.Thread(target=converse, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield arrived, listener.getsockname()[1]
    release.set()
    listener.close()


def test_sigterm_during_a_stuck_email_exits_within_ten_seconds(
    tmp_path: Path, stuck_smtp: tuple[threading.Event, int]
) -> None:
    # Found by a signal test: the cancelled send left smtplib blocked in a worker thread,
    # and the interpreter waited for it at exit until the SMTP timeout (30 s).
    arrived, smtp_port = stuck_smtp
    port = free_port()
    (tmp_path / "wire.xml").write_text(wire([UNRELATED_ITEM]))
    config = watch_site(
        tmp_path,
        port,
        story=STORY,
        sources={"wire": "wire.xml"},
        notify=["email: desk@example.org"],
        smtp_port=smtp_port,
    )
    daemon = Daemon(config, port, tmp_path).start()
    try:
        daemon.wait_for("hq.json", lambda r: r.status == 200)  # the watch's backlog pass is done
        (tmp_path / "wire.xml").write_text(wire([UNRELATED_ITEM, FOLLOW_UP_ITEM]))
        assert arrived.wait(20), daemon.log()
        code, _ = daemon.stop(signal.SIGTERM)  # raises when the daemon is not gone in 10 s
        assert code == 0, daemon.log()
    finally:
        daemon.kill()


def test_sighup_stops_the_daemon_gracefully(tmp_path: Path) -> None:
    # Found by a signal test: SIGHUP (a closed terminal, a log rotation script) was not
    # handled, so its default action killed the daemon mid-pass (exit status -1).
    port = free_port()
    (tmp_path / "wire.xml").write_text(wire([UNRELATED_ITEM]))
    config = tmp_path / "feedservice.yaml"
    config.write_text(
        f"""
service:
  base_url: http://127.0.0.1:{port}/
  listen: 127.0.0.1:{port}
  feeds_dir: feeds
  data_dir: var
sources:
  - name: wire
    url: wire.xml
    interval: 1m
"""
    )
    daemon = Daemon(config, port, tmp_path).start()
    try:
        time.sleep(1)  # the first pass is done
        code, _ = daemon.stop(signal.SIGHUP)
    finally:
        daemon.kill()
    assert code == 0, daemon.log()
    assert "shutting down" in daemon.log()
