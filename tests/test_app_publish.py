"""Publishing through the app across passes: a pass that changes nothing leaves the files as
they were (and restores one that went missing), and a changed story reaches every format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from feedservice.app import App
from feedservice.config import Config, load_config
from tests.clock import Clock

REPO = Path(__file__).resolve().parents[1]


def bundled_copy(tmp_path: Path) -> Config:
    shutil.copytree(REPO / "config", tmp_path / "config")
    shutil.copytree(REPO / "stories", tmp_path / "stories")
    return load_config(tmp_path / "config" / "feedservice.yaml")


async def test_unchanged_pass_keeps_files_and_restores_a_missing_one(tmp_path: Path) -> None:
    config = bundled_copy(tmp_path)
    feeds = tmp_path / "feeds"
    async with App(config, clock=Clock()) as app:
        await app.run_once()
        before = {p.name: p.read_bytes() for p in feeds.iterdir() if p.is_file()}
        assert "newsroom.atom" in before and "all.json" in before
        (feeds / "newsroom.rss").unlink()
        report = await app.run_once(force=True)
        after = {p.name: p.read_bytes() for p in feeds.iterdir() if p.is_file()}
    assert after == before
    assert [p.name for p in report.written] == ["newsroom.rss"]


async def test_edited_story_is_republished_in_every_format(tmp_path: Path) -> None:
    config = bundled_copy(tmp_path)
    feeds = tmp_path / "feeds"
    story = tmp_path / "stories" / "library-hours.txt"
    async with App(config, clock=Clock()) as app:
        await app.run_once()
        old = story.read_text(encoding="utf-8")
        assert "bank holidays" not in old
        story.write_text(old.rstrip("\n") + "\n\nThe library now also opens on bank holidays.\n")
        report = await app.run_once(force=True)
    assert report.changed == 1
    for name in ("newsroom", "all"):
        for fmt in ("atom", "rss", "json"):
            text = (feeds / f"{name}.{fmt}").read_text(encoding="utf-8")
            assert "bank holidays" in text, (name, fmt)
    items = json.loads((feeds / "newsroom.json").read_text())["items"]
    assert any("bank holidays" in i["content_html"] for i in items)


async def test_untouched_feeds_are_not_read_again_unless_their_file_changed(
    tmp_path: Path,
) -> None:
    config = bundled_copy(tmp_path)
    feeds = tmp_path / "feeds"
    async with App(config, clock=Clock()) as app:
        await app.run_once()
        original = (feeds / "newsroom.json").read_bytes()
        # entries removed behind the app's back: a pass that touches no source trusts the
        # files it wrote and does not read the store for them
        gone = [e.id for e in app.store.latest_entries(["newsroom"], 50)]
        app.store.delete_entries("newsroom", gone)
        assert (await app.run_once(force=True)).written == ()
        assert (feeds / "newsroom.json").read_bytes() == original
        # a file changed by someone else is rendered again, from the store as it is now, and
        # so are the feed's other formats, which the store no longer matches
        (feeds / "newsroom.json").write_text("{}")
        report = await app.run_once(force=True)
    assert sorted(p.name for p in report.written) == [
        "newsroom.atom",
        "newsroom.json",
        "newsroom.rss",
    ]
    assert json.loads((feeds / "newsroom.json").read_text())["items"] == []
