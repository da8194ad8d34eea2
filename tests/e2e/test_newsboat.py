"""A real feed reader (Debian's newsboat, headless ``-x reload``) subscribed to the served
feeds stores every entry (issue 2, "Done when")."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import feedparser
import pytest

from tests.e2e.daemon import Daemon, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def write_config(root: Path, port: int) -> Path:
    config = root / "feedservice.yaml"
    config.write_text(
        f"""
service:
  base_url: http://127.0.0.1:{port}/
  listen: 127.0.0.1:{port}
  feeds_dir: feeds
  data_dir: var
  dispatch_every: 0.5s
sources:
  - name: newsroom
    directory: {REPO / "stories"}
  - name: wire
    url: {REPO / "config" / "samples" / "wire.xml"}
  - name: agency
    url: {REPO / "config" / "samples" / "agency.xml"}
feeds:
  - name: newsroom
    title: Newsroom
    sources: [newsroom]
  - name: all
    title: Everything
"""
    )
    return config


@pytest.mark.parametrize("name", ["newsroom", "all"])
@pytest.mark.parametrize("fmt", ["atom", "rss"])
def test_newsboat_stores_every_entry(tmp_path: Path, name: str, fmt: str) -> None:
    newsboat = shutil.which("newsboat")
    if newsboat is None:
        pytest.skip("newsboat is not installed (CI installs it: apt-get install newsboat)")
    port = free_port()
    daemon = Daemon(write_config(tmp_path, port), port, tmp_path).start()
    try:
        served = daemon.wait_for(
            f"{name}.{fmt}", lambda r: r.status == 200 and len(feedparser.parse(r.body).entries) > 3
        )
        expected = {e.id for e in feedparser.parse(served.body).entries}
        urls = tmp_path / "urls"
        urls.write_text(f"{daemon.base}{name}.{fmt}\n")
        (tmp_path / "newsboat.conf").write_text("")
        cache = tmp_path / "cache.db"
        run = subprocess.run(
            [
                newsboat,
                "-x",
                "reload",
                "-u",
                str(urls),
                "-c",
                str(cache),
                "-C",
                str(tmp_path / "newsboat.conf"),
            ],
            capture_output=True,
            timeout=60,
            env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )
        assert run.returncode == 0, run.stderr.decode(errors="replace")
    finally:
        daemon.kill()
    con = sqlite3.connect(cache)
    stored = {row[0] for row in con.execute("SELECT guid FROM rss_item")}
    con.close()
    assert len(expected) >= 4
    assert stored == expected
