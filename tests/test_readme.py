"""The README's configuration reference stays true: its example loads, and it shows every key
the loader accepts (the known keys are read from the loader's own unknown-key error)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from feedservice.config import load_config
from feedservice.errors import ConfigError

README = Path(__file__).resolve().parent.parent / "README.md"
ENV = {"SMTP_PASSWORD": "pw", "HOOK_SECRET": "s3cret"}


def reference_yaml() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert match, "README: no yaml block under 'Configuration reference'"
    return match.group(1)


def site(tmp_path: Path, text: str) -> Path:
    """The example's relative paths, as a user's checkout would have them."""
    (tmp_path / "stories").mkdir(exist_ok=True)
    (tmp_path / "stories" / "japan-us-hq.txt").write_text("A title\n\nA paragraph.\n")
    (tmp_path / "config").mkdir(exist_ok=True)
    path = tmp_path / "config" / "feedservice.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_reference_example_loads(tmp_path: Path) -> None:
    config = load_config(site(tmp_path, reference_yaml()), env=ENV)
    assert [s.name for s in config.sources] == ["newsroom", "wire"]
    assert [w.name for w in config.watches] == ["japan-us-hq"]


SECTIONS: list[tuple[str, ...]] = [
    ("service",),
    ("fetch",),
    ("smtp",),
    ("sources", "0"),
    ("feeds", "0"),
    ("watches", "0"),
    ("watches", "0", "notify", "0"),
]


def _at(data: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        data = data[int(part)] if part.isdigit() else data[part]
    return data


def _shown_keys(data: Any, path: tuple[str, ...]) -> set[str]:
    """Keys the README shows at ``path``, over every list element at the last list."""
    if path and path[-1].isdigit():
        return {k for element in _at(data, path[:-1]) for k in element}
    return set(_at(data, path))


@pytest.mark.parametrize("path", SECTIONS, ids=".".join)
def test_the_reference_shows_every_key(tmp_path: Path, path: tuple[str, ...]) -> None:
    data = yaml.safe_load(reference_yaml())
    _at(data, path)["zzzzzzzz"] = 1  # far from every real key: the error lists them all
    with pytest.raises(ConfigError) as caught:
        load_config(site(tmp_path, yaml.safe_dump(data, sort_keys=False)), env=ENV)
    listed = re.search(r"expected one of ([^\n]*)", str(caught.value))
    assert listed, str(caught.value)
    known = set(re.findall(r"'([^']+)'", listed.group(1)))
    assert known and known <= _shown_keys(yaml.safe_load(reference_yaml()), path), (
        f"README's reference lacks {sorted(known - _shown_keys(data, path))} at {path}"
    )
