"""The command line as a user runs it: exit codes and messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def feedservice(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "feedservice", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_bundled_config_checks(tmp_path: Path) -> None:
    run = feedservice("check-config", "--config", str(REPO / "config" / "feedservice.yaml"))
    assert run.returncode == 0, run.stderr
    assert "newsroom" in run.stdout and "japan-us-hq" in run.stdout


def test_invalid_config_names_file_line_and_field(tmp_path: Path) -> None:
    config = write(
        tmp_path / "bad.yaml",
        "sources:\n  - name: a\n    directory: .\n    interval: soon\n",
    )
    run = feedservice("once", "--config", str(config))
    assert run.returncode == 2
    assert f"{config}:4: sources[0].interval: expected a duration like 90s, 15m or 1h" in run.stderr
    assert "Traceback" not in run.stderr


def test_once_then_status(tmp_path: Path) -> None:
    write(tmp_path / "stories" / "a.txt", "A story\n\nIts only paragraph.\n")
    write(tmp_path / "stories" / "broken.md", "---\ntitle: [unclosed\n---\nbody\n")
    write(tmp_path / "gone.xml", "<html><body>not a feed</body></html>")
    config = write(
        tmp_path / "feedservice.yaml",
        "service:\n  feeds_dir: feeds\n  data_dir: var\n"
        "sources:\n  - name: news\n    directory: stories\n"
        "  - name: junk\n    url: gone.xml\n",
    )
    run = feedservice("once", "--config", str(config))
    assert run.returncode == 0, run.stderr
    assert "polled 2 sources: 1 new" in run.stdout
    assert "broken.md" in run.stderr and "gone.xml" in run.stderr
    for fmt in ("atom", "rss", "json"):
        assert b"A story" in (tmp_path / "feeds" / f"all.{fmt}").read_bytes()

    status = feedservice("status", "--config", str(config))
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].split()[:3] == ["source", "last", "success"]
    junk = next(line for line in lines if line.startswith("junk"))
    assert "backoff" in junk and " 1 " in junk
    news = next(line for line in lines if line.startswith("news"))
    assert "broken.md" in news


def test_unopenable_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "var").write_text("a file where the data folder should be")
    config = write(
        tmp_path / "feedservice.yaml",
        "service:\n  feeds_dir: feeds\n  data_dir: var\nsources: []\n",
    )
    run = feedservice("once", "--config", str(config))
    assert run.returncode == 1
    assert "var" in run.stderr and "Traceback" not in run.stderr


def test_a_second_process_on_one_data_folder_is_refused_status_still_reads(
    tmp_path: Path,
) -> None:
    """One process writes a data folder (a daemon and a cron `once` racing would void each
    other's delivery leases and move the monitor's catch-up mark past each other's entries).
    The second is refused with the lock file and the holder's pid; `status` only reads and
    runs beside it; once the holder is killed (no clean-up), the folder is free again."""
    write(tmp_path / "stories" / "a.txt", "A story\n\nIts only paragraph.\n")
    config = write(
        tmp_path / "feedservice.yaml",
        "service:\n  feeds_dir: feeds\n  data_dir: var\n"
        "sources:\n  - name: news\n    directory: stories\n",
    )
    assert feedservice("once", "--config", str(config)).returncode == 0
    holding = (
        "import sys; from pathlib import Path; from feedservice.datalock import DataLock; "
        "DataLock(Path(sys.argv[1])).acquire(); print('holding', flush=True); sys.stdin.read()"
    )
    with subprocess.Popen(
        [sys.executable, "-c", holding, str(tmp_path / "var")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
            second = feedservice("once", "--config", str(config))
            assert second.returncode == 1
            assert str(tmp_path / "var" / "feedservice.lock") in second.stderr
            assert f"another feedservice process {holder.pid} is using" in second.stderr
            assert "Traceback" not in second.stderr
            status = feedservice("status", "--config", str(config))
            assert status.returncode == 0, status.stderr
            assert any(line.startswith("news") for line in status.stdout.splitlines())
        finally:
            holder.kill()  # no clean-up: the kernel releases the lock
    assert feedservice("once", "--config", str(config)).returncode == 0
