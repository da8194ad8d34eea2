"""End to end: ``feedservice run`` as a subprocess on a free port with a temporary config."""

from __future__ import annotations

import gzip
import json
import re
import signal
import socket
import time
from pathlib import Path

import feedparser
import pytest

from tests.e2e.daemon import Daemon, HttpReply, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RSS = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Local wire</title><link>https://wire.example/</link>
<description>d</description>
<item><title>Wire one</title><link>https://wire.example/1</link><guid>https://wire.example/1</guid>
<pubDate>Mon, 23 Nov 2026 06:10:00 GMT</pubDate><description>First wire item.</description></item>
<item><title>Wire two</title><link>https://wire.example/2</link><guid>https://wire.example/2</guid>
<pubDate>Tue, 24 Nov 2026 06:10:00 GMT</pubDate><description>Second wire item.</description></item>
</channel></rss>
"""


def write_config(root: Path, port: int) -> Path:
    stories = root / "stories"
    stories.mkdir()
    (stories / "first.txt").write_text(
        "First story\n\nThe first paragraph of the first story.\n\nA second paragraph.\n"
    )
    (stories / "2026").mkdir()  # a folder and a name that folds: a hashed, nested slug
    (stories / "2026" / "Second Story.md").write_text(
        "---\ntitle: Second story\ndate: 2026-11-20T10:00:00Z\n---\n\nHello *world*.\n"
    )
    (stories / "broken.json").write_text('{"title": "Broken", "content_text": ')
    (root / "wire.xml").write_text(RSS)
    (root / "garbage.xml").write_bytes(b"\x00\x01\x02 not a feed at all \xff\xfe")
    config = root / "config" / "feedservice.yaml"
    config.parent.mkdir()
    config.write_text(
        f"""
service:
  base_url: http://127.0.0.1:{port}/
  listen: 127.0.0.1:{port}
  feeds_dir: ../feeds
  data_dir: ../var
  dispatch_every: 0.3s
fetch:
  min_interval: 1s
sources:
  - name: newsroom
    directory: ../stories
    interval: 1s
  - name: wire
    url: ../wire.xml
    interval: 1s
  - name: garbage
    url: ../garbage.xml
    interval: 1s
feeds:
  - name: newsroom
    title: Newsroom
    sources: [newsroom]
  - name: everything
    title: Everything
"""
    )
    return config


def titles(reply: HttpReply) -> set[str]:
    return {e.title for e in feedparser.parse(reply.body).entries}


def test_daemon_serves_updates_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    daemon = Daemon(config, port, tmp_path).start()
    try:
        atom = daemon.wait_for(
            "newsroom.atom",
            lambda r: r.status == 200 and titles(r) == {"First story", "Second story"},
        )
        assert atom.headers["Content-Type"].startswith("application/atom+xml")
        rss = daemon.get("newsroom.rss")
        assert rss.status == 200 and rss.headers["Content-Type"].startswith("application/rss+xml")
        js = daemon.get("newsroom.json")
        assert js.headers["Content-Type"].startswith("application/feed+json")
        assert {i["title"] for i in json.loads(js.body)["items"]} == {"First story", "Second story"}
        daemon.wait_for("everything.atom", lambda r: r.status == 200 and "Wire two" in titles(r))

        # a new story file is served within the poll interval
        (tmp_path / "stories" / "third.txt").write_text("Third story\n\nJust added.\n")
        daemon.wait_for("newsroom.atom", lambda r: "Third story" in titles(r), timeout=15)

        # conditional GET: 304 on the ETag and on Last-Modified; gzip when asked
        atom = daemon.get("newsroom.atom")
        assert daemon.get("newsroom.atom", {"If-None-Match": atom.headers["ETag"]}).status == 304
        lm = daemon.get("newsroom.atom", {"If-Modified-Since": atom.headers["Last-Modified"]})
        assert lm.status == 304
        gz = daemon.get("newsroom.atom", {"Accept-Encoding": "gzip"})
        assert gz.headers.get("Content-Encoding") == "gzip"
        assert gzip.decompress(gz.body) == atom.body

        # the broken feed file and the malformed story are reported; the rest goes on
        health = json.loads(daemon.get("healthz").body)
        failing = {f["name"]: f for f in health["failing"]}
        assert "garbage" in failing and "garbage.xml" in (failing["garbage"]["last_error"] or "")
        assert "broken.json" in (failing["newsroom"]["last_error"] or "")

        # the index lists every feed with autodiscovery links
        index = daemon.get("").body.decode()
        assert re.search(
            r'<link rel="alternate" type="application/atom\+xml"[^>]*newsroom\.atom', index
        )
        assert "everything.rss" in index

        # a local story's permalink page works
        first = next(e for e in feedparser.parse(atom.body).entries if e.title == "First story")
        page = daemon.get(first.link.removeprefix(daemon.base))
        assert page.status == 200 and b"The first paragraph of the first story." in page.body
        second = next(e for e in feedparser.parse(atom.body).entries if e.title == "Second story")
        assert re.search(r"/stories/newsroom/2026/second-story-[0-9a-f]{8}\.html$", second.link)
        page = daemon.get(second.link.removeprefix(daemon.base))
        assert page.status == 200 and b"<em>world</em>" in page.body

        # a request the server cannot parse costs one warning line, not a traceback
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
            assert sock.recv(64).startswith(b"HTTP/1.0 400")

        code, seconds = daemon.stop(signal.SIGTERM)
        assert code == 0 and seconds < 10
        warned = [line for line in daemon.log().splitlines() if "Content-Length" in line]
        assert len(warned) == 1 and "WARNING feedservice.server" in warned[0], daemon.log()
        assert "400" in warned[0] and "Traceback" not in daemon.log()
    finally:
        daemon.kill()

    # a restart changes no id and no byte of an unchanged feed
    before = {p.name: p.read_bytes() for p in (tmp_path / "feeds").iterdir()}
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "feeds").iterdir()}
    again = Daemon(config, port, tmp_path).start()
    try:
        # every source is polled again (interval 1s) and republished with nothing changed
        time.sleep(3)
        assert again.get("newsroom.atom").body == before["newsroom.atom"]
        code, _ = again.stop(signal.SIGINT)
        assert code == 0
    finally:
        again.kill()
    after = {p.name: p.read_bytes() for p in (tmp_path / "feeds").iterdir()}
    assert after == before
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "feeds").iterdir()} == mtimes
