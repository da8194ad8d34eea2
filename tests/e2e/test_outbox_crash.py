"""The daemon killed mid-delivery delivers after restart, once (issue 4, item 5)."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.e2e.daemon import Daemon, free_port, watch_site
from tests.test_app_monitor import FOLLOW_UP_ITEM, STORY, UNRELATED_ITEM, wire

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


class Hook:
    """Hangs on the first delivery (so the daemon can be killed mid-request), then accepts."""

    def __init__(self) -> None:
        self.attempts: list[str] = []
        self.acknowledged: list[str] = []
        self.first_arrived = threading.Event()
        self.release = threading.Event()


@pytest.fixture
def hook() -> Iterator[tuple[Hook, str]]:
    state = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            json.loads(self.rfile.read(length))
            key = self.headers["Idempotency-Key"]
            state.attempts.append(key)
            if len(state.attempts) == 1:
                state.first_arrived.set()
                state.release.wait(20)
                return  # the client is gone by now
            state.acknowledged.append(key)
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}/hook"
    state.release.set()
    server.shutdown()
    server.server_close()


def test_killed_mid_delivery_delivers_after_restart_once(
    tmp_path: Path, hook: tuple[Hook, str]
) -> None:
    state, url = hook
    port = free_port()
    (tmp_path / "wire.xml").write_text(wire([UNRELATED_ITEM]))
    config = watch_site(
        tmp_path, port, story=STORY, sources={"wire": "wire.xml"}, notify=[f"webhook: {url}"]
    )
    daemon = Daemon(config, port, tmp_path).start()
    try:
        daemon.wait_for("hq.json", lambda r: r.status == 200)  # the watch's backlog pass is done
        (tmp_path / "wire.xml").write_text(wire([UNRELATED_ITEM, FOLLOW_UP_ITEM]))
        assert state.first_arrived.wait(20), daemon.log()
        daemon.kill()  # SIGKILL while the webhook request is in flight
    finally:
        daemon.kill()
    state.release.set()

    again = Daemon(config, port, tmp_path).start()
    try:
        deadline = time.monotonic() + 20
        while not state.acknowledged and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2)  # several more dispatch ticks: nothing is sent again
        code, _ = again.stop(signal.SIGTERM)
        assert code == 0
    finally:
        again.kill()
    assert len(state.attempts) == 2, again.log()
    assert state.attempts[0] == state.attempts[1]  # the same idempotency key
    assert len(state.acknowledged) == 1
