"""Start ``feedservice run`` as a subprocess on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def watch_site(
    root: Path,
    port: int,
    *,
    story: str,
    sources: Mapping[str, str],
    notify: Sequence[str] = (),
    smtp_port: int | None = None,
) -> Path:
    """Write ``root/story.txt`` and a config polling ``sources`` (name -> URL or file) every
    second, with one watch "hq" on that story notifying ``notify`` (e.g. "webhook: URL");
    return the config's path."""
    (root / "story.txt").write_text(story)
    smtp = (
        f"smtp:\n  host: 127.0.0.1\n  port: {smtp_port}\n  from: feeds@example.org\n"
        if smtp_port is not None
        else ""
    )
    polled = "".join(f"  - name: {n}\n    url: {u}\n    interval: 1s\n" for n, u in sources.items())
    targets = "".join(f"\n      - {t}" for t in notify)
    if targets:
        targets = "\n    notify:" + targets
    config = root / "feedservice.yaml"
    config.write_text(
        f"""
service:
  base_url: http://127.0.0.1:{port}/
  listen: 127.0.0.1:{port}
  feeds_dir: feeds
  data_dir: var
  dispatch_every: 0.3s
fetch:
  min_interval: 1s
{smtp}sources:
{polled}watches:
  - name: hq
    story: story.txt{targets}
"""
    )
    return config


@dataclass
class HttpReply:
    status: int
    headers: Mapping[str, str]
    body: bytes


def http_get(url: str, headers: Mapping[str, str] | None = None, timeout: float = 10) -> HttpReply:
    req = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return HttpReply(resp.status, dict(resp.headers.items()), resp.read())
    except urllib.error.HTTPError as err:
        body = err.read()
        err.close()
        return HttpReply(err.code, dict(err.headers.items()), body)


class Daemon:
    """``feedservice run`` in a subprocess; stderr goes to a log file for diagnostics."""

    def __init__(self, config: Path, port: int, workdir: Path) -> None:
        self.config = config
        self.port = port
        self.base = f"http://127.0.0.1:{port}/"
        self.log_path = workdir / f"daemon-{port}-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> Daemon:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDSERVICE_")}
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "feedservice", "run", "--config", str(self.config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited early:\n{self.log()}")
            try:
                if http_get(self.base + "healthz", timeout=2).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"daemon did not answer within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> HttpReply:
        return http_get(self.base + path, headers)

    def wait_for(self, path: str, predicate: object, timeout: float = 20) -> HttpReply:
        """GET ``path`` until ``predicate(reply)`` holds."""
        assert callable(predicate)
        deadline = time.monotonic() + timeout
        last: HttpReply | None = None
        while time.monotonic() < deadline:
            last = self.get(path)
            if predicate(last):
                return last
            time.sleep(0.2)
        raise AssertionError(
            f"{path}: condition not met within {timeout}s; last status "
            f"{last.status if last else None}\n{self.log()}"
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> tuple[int, float]:
        """Send ``sig``; returns (exit code, seconds it took)."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"daemon did not exit within {timeout}s:\n{self.log()}") from None
        finally:
            self._log.close()
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if hasattr(self, "_log"):
            self._log.close()
