"""config/*.yaml -> a validated, frozen :class:`Config`.

The only module that reads YAML or environment variables (issue 2, item 2; issue 4, item 1).

Loading runs in four steps, each reporting errors as ``file:line: field.path: what was
expected, got ...``:

1. read the file and compose the YAML node tree (syntax errors name the line), recording the
   line of every mapping key and sequence item so later errors can point at it;
2. interpolate ``${VAR}`` / ``${VAR:-default}`` in string values (``$${`` is a literal ``${``);
3. validate the shape with private pydantic v2 models (unknown keys are errors; the closest
   known key is suggested);
4. cross-check (unique names, known sources, story files exist), resolve relative paths
   against the config file's folder and freeze everything into dataclasses.

Pydantic models never leave this module: callers see :class:`Config` and the records in
:mod:`feedservice.model`.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit
from urllib.request import url2pathname

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from feedservice.errors import ConfigError
from feedservice.model import FEED_FORMATS, FeedSpec, NotifyTarget, Source, Watch

DEFAULT_CONFIG_PATH = Path("config/feedservice.yaml")
CONFIG_ENV_VAR = "FEEDSERVICE_CONFIG"
DEFAULT_SOURCE_INTERVAL = 15 * 60.0
DEFAULT_FEED_NAME = "all"
DEFAULT_FEED_TITLE = "All stories"

# At most this many problems are listed in one ConfigError; the rest are counted.
_MAX_REPORTED_ERRORS = 20


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    base_url: str = "http://127.0.0.1:8080/"  # always ends with "/"
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    feeds_dir: Path = Path("feeds")
    data_dir: Path = Path("var")
    database_url: str | None = None  # None = sqlite:///<data_dir>/feedservice.sqlite3
    dispatch_every: float = 5.0  # seconds between "dispatch due sources" ticks
    jitter: float = 0.1  # fraction of the interval added at random to next_check_at


@dataclass(frozen=True, slots=True)
class FetchConfig:
    max_concurrency: int = 64
    per_host: int = 8
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    total_timeout: float = 60.0
    max_body_bytes: int = 10 * 1024 * 1024
    max_entries_per_feed: int = 500
    min_interval: float = 60.0
    max_interval: float = 86400.0
    max_backoff: float = 86400.0
    parse_workers: int = 0  # 0: parse and normalise inline; N: in a pool of N processes


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str = "127.0.0.1"
    port: int = 25
    sender: str = "feedservice@localhost"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = False  # plain connection upgraded with STARTTLS (RFC 3207), port 587
    tls: bool = False  # implicit TLS from the first byte (RFC 8314), port 465
    ca_file: Path | None = None  # PEM CA bundle trusted instead of the system's (private CAs)
    timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    service: ServiceConfig = field(default_factory=ServiceConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    sources: tuple[Source, ...] = ()
    feeds: tuple[FeedSpec, ...] = ()
    watches: tuple[Watch, ...] = ()


# --- public helpers ------------------------------------------------------------------------------

_DURATION_MESSAGE = "expected a duration like 90s, 15m or 1h, got {got}"
_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*(w|d|h|m|s)", re.IGNORECASE)
_DURATION_UNITS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_NUMBER = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*")

_SIZE_MESSAGE = "expected a size like 10MiB, 512KB or a number of bytes, got {got}"
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*([kmg]i?b|b)?\s*", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


def parse_duration(text: str | int | float) -> float:
    """``90s`` / ``15m`` / ``1h`` / ``1d`` / ``1h30m`` (or a bare number of seconds) -> seconds.

    Raises ValueError ``expected a duration like 90s, 15m or 1h, got 'soon'`` for anything
    else, including negative numbers and booleans.
    """
    error = ValueError(_DURATION_MESSAGE.format(got=_got(text)))
    if isinstance(text, bool):
        raise error
    if isinstance(text, int | float):
        if text < 0 or not math.isfinite(text):
            raise error
        return float(text)
    if not isinstance(text, str):
        raise error
    if _NUMBER.fullmatch(text):
        return float(text)
    total = 0.0
    pos = 0
    stripped = text.rstrip()
    while pos < len(stripped):
        part = _DURATION_PART.match(stripped, pos)
        if part is None:
            raise error
        total += float(part.group(1)) * _DURATION_UNITS[part.group(2).lower()]
        pos = part.end()
    if pos == 0:
        raise error
    return total


def format_duration(seconds: float) -> str:
    """The inverse of :func:`parse_duration` for display: ``5400`` -> ``1h30m``."""
    if seconds != int(seconds):
        return f"{seconds:g}s"
    rest = int(seconds)
    if rest == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def parse_size(text: str | int) -> int:
    """``10MiB`` / ``512KB`` / ``100B`` (or a bare number of bytes) -> bytes.

    KB/MB/GB are powers of 1000 and KiB/MiB/GiB powers of 1024 (IEC 80000-13).
    Raises ValueError ``expected a size like 10MiB, 512KB or a number of bytes, got ...``.
    """
    error = ValueError(_SIZE_MESSAGE.format(got=_got(text)))
    if isinstance(text, bool):
        raise error
    if isinstance(text, int):
        if text < 0:
            raise error
        return text
    if not isinstance(text, str):
        raise error
    match = _SIZE.fullmatch(text)
    if match is None:
        raise error
    unit = (match.group(2) or "b").lower()
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) -> ``(host, port)``; port 0 means "any free".

    Raises ValueError saying what was expected.
    """
    error = ValueError(f"expected HOST:PORT like 127.0.0.1:8080, got {_got(text)}")
    if not isinstance(text, str):
        raise error
    match = re.fullmatch(r"\s*(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):(\d{1,5})\s*", text)
    if match is None:
        raise error
    host, port = match.group(1), int(match.group(2))
    if port > 65535:
        raise ValueError(f"expected a port from 0 to 65535, got {port}")
    return host.strip("[]"), port


def resolve_config_path(cli_value: str | None, env: Mapping[str, str]) -> Path:
    """The config file to use: ``--config`` if given, else ``$FEEDSERVICE_CONFIG``, else
    :data:`DEFAULT_CONFIG_PATH` (relative to the working directory)."""
    if cli_value:
        return Path(cli_value)
    from_env = env.get(CONFIG_ENV_VAR)
    if from_env:
        return Path(from_env)
    return DEFAULT_CONFIG_PATH


def load_config(path: Path, *, env: Mapping[str, str] | None = None) -> Config:
    """Read, interpolate, validate and freeze the config file at ``path``.

    ``env`` supplies ``${VAR}`` values (default: ``os.environ``).

    Raises ConfigError naming the file (as given), the line and the field path and saying
    what was expected; when there are several problems, ``str()`` lists them one per line,
    ordered by line. Causes: the file cannot be read or is not UTF-8; YAML syntax; an
    undefined variable without a default; wrong types or values; unknown keys; duplicate
    names; a feed or watch naming an unknown source; a watch's story file missing; a notify
    ``secret`` beside anything but ``webhook``; ``smtp.tls`` together with ``smtp.starttls``;
    ``smtp.ca_file`` missing, or given with neither.
    """
    shown = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", path=shown) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file is not UTF-8 text ({exc.reason})", path=shown) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the config file: {exc.strerror}", path=shown) from None

    base_dir = Path(os.path.abspath(path)).parent
    data, lines, problems = _read_yaml(text)
    if not problems:
        data = _interpolate(data, (), os.environ if env is None else env, problems)
    if not problems:
        root = _validate(data, problems)
        if root is not None:
            config = _build(root, Path(os.path.abspath(path)), base_dir, lines, problems)
            if not problems:
                return config
    raise _combine(problems, lines, shown)


def summarize_config(config: Config) -> str:
    """A human summary of ``config`` for ``feedservice check-config``."""
    svc = config.service
    out = [
        f"config: {config.path}",
        f"service: {svc.base_url} (listening on {_host_port(svc.listen_host, svc.listen_port)})",
        f"  feeds_dir: {svc.feeds_dir}",
        f"  data_dir:  {svc.data_dir}",
        f"  database:  {_redact(svc.database_url) if svc.database_url else 'SQLite in data_dir'}",
    ]
    out.append(f"sources ({len(config.sources)}):")
    width = max((len(s.name) for s in config.sources), default=0)
    for src in config.sources:
        kind, where = ("directory", str(src.directory)) if src.is_directory else ("url", src.url)
        extra = ", adaptive" if src.adaptive else ""
        title = f'  "{src.title}"' if src.title else ""
        out.append(
            f"  {src.name:<{width}}  {kind:<9}  {where}  "
            f"every {format_duration(src.interval)}{extra}{title}"
        )
    out.append(f"feeds ({len(config.feeds)}):")
    for feed in config.feeds:
        out.append(
            f'  {feed.name}  "{feed.title}"  [{", ".join(feed.formats)}]  limit {feed.limit}  '
            f"sources: {', '.join(feed.sources) or '(none)'}"
        )
    out.append(f"watches ({len(config.watches)}):")
    for watch in config.watches:
        out.append(f'  {watch.name}  "{watch.title}"')
        if watch.story is not None:
            out.append(f"    story: {watch.story}")
        if watch.query is not None:
            out.append(f"    query: {watch.query}")
        sources = ", ".join(watch.sources) if watch.sources is not None else "all"
        threshold = "default" if watch.threshold is None else f"{watch.threshold:g}"
        out.append(f"    sources: {sources}; threshold: {threshold}; limit {watch.limit}")
        if watch.notify:
            targets = ", ".join(
                f"{t.kind} {' '.join(t.argv) if t.kind == 'command' else _redact(t.target)}"
                + (" (signed)" if t.secret else "")
                for t in watch.notify
            )
            backlog = " (backlog too)" if watch.notify_backlog else ""
            out.append(f"    notify: {targets}{backlog}")
    return "\n".join(out)


# --- step 1: YAML with line numbers --------------------------------------------------------------

_Loc = tuple[str | int, ...]


@dataclass(slots=True)
class _Problem:
    loc: _Loc
    message: str
    line: int | None = None  # set when the loc alone cannot find it (e.g. YAML syntax)


def _yaml_loader_class() -> type[yaml.SafeLoader]:
    # libyaml keeps marks too; measured here it loads 10,000 sources (issue 3) in ~1.5 s, 3x faster
    # than the pure-Python loader.
    loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return loader  # type: ignore[no-any-return]


def _read_yaml(text: str) -> tuple[Any, dict[_Loc, int], list[_Problem]]:
    lines: dict[_Loc, int] = {}
    problems: list[_Problem] = []
    loader = _yaml_loader_class()(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}, lines, problems
        # Index before constructing: the constructor flattens merge keys ("<<") in place.
        if not _index_lines(node, (), lines, problems, set(), [_MAX_YAML_VALUES]):
            # aliases of aliases ("billion laughs") would build a structure without end
            message = (
                f"expected plain data, got more than {_MAX_YAML_VALUES:,} values through aliases"
            )
            return None, {}, [_Problem((), message)]
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "not valid YAML"
        column = f" (column {mark.column + 1})" if mark is not None else ""
        line = mark.line + 1 if mark is not None else None
        return None, {}, [_Problem((), f"YAML syntax error: {what}{column}", line)]
    except yaml.YAMLError as exc:
        return None, {}, [_Problem((), f"YAML error: {exc}")]
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        problems.append(
            _Problem(
                (), f"expected a mapping of sections (service, sources, ...), got {_got(data)}"
            )
        )
    return data, lines, problems


# Far above any real config (10,000 sources are about 50,000 values), far below what exhausts
# memory: the walk below follows aliases, so it counts what the document expands to.
_MAX_YAML_VALUES = 1_000_000


def _index_lines(
    node: yaml.Node,
    loc: _Loc,
    lines: dict[_Loc, int],
    problems: list[_Problem],
    seen: set[int],
    budget: list[int],
) -> bool:
    """Record the 1-based line of every key and item under ``node``; flag duplicate keys.
    False when the document expands to more than ``budget[0]`` values (then stop)."""
    budget[0] -= 1
    if budget[0] < 0:
        return False
    lines.setdefault(loc, node.start_mark.line + 1)
    if id(node) in seen:
        problems.append(_Problem(loc, "expected plain data, got an alias to its own ancestor"))
        return True
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                continue
            key = key_node.value
            key_line = key_node.start_mark.line + 1
            if key in first_line:
                # PyYAML silently keeps the last one; a repeated key is almost always a mistake.
                problems.append(
                    _Problem(
                        (*loc, key),
                        f"duplicate key (first at line {first_line[key]})",
                        key_line,
                    )
                )
                continue
            first_line[key] = key_line
            lines[(*loc, key)] = key_line
            if not _index_lines(value_node, (*loc, key), lines, problems, seen, budget):
                return False
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            if not _index_lines(item, (*loc, index), lines, problems, seen, budget):
                return False
    seen.discard(id(node))
    return True


# --- step 2: ${VAR} interpolation ----------------------------------------------------------------

_INTERPOLATION = re.compile(
    r"\$\$\{|\$\{(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|(?P<bad>))"
)


def _interpolate(value: Any, loc: _Loc, env: Mapping[str, str], problems: list[_Problem]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, (*loc, k), env, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*loc, i), env, problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        if match.group("bad") is not None:
            problems.append(
                _Problem(loc, f"expected ${{NAME}} or ${{NAME:-default}}, got {value!r}")
            )
            return ""
        name = match.group("name")
        found = env.get(name)
        default = match.group("default")
        # Like the shell's ${NAME:-default}: the default also covers a variable set to "".
        if default is not None and not found:
            return default
        if found is None:
            problems.append(
                _Problem(
                    loc,
                    f"environment variable {name!r} is not set "
                    f"(write ${{{name}:-default}} to give a default)",
                )
            )
            return ""
        return found

    return _INTERPOLATION.sub(substitute, value)


# --- step 3: shape, with private pydantic models -------------------------------------------------


def _got(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _no_bool(value: object) -> object:
    # pydantic's lax mode reads true as 1; in a config that is a typo, not a number.
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {_got(value)}")
    return value


def _duration(*, positive: bool = True) -> Callable[[object], float]:
    def validate(value: object) -> float:
        if not isinstance(value, str | int | float):
            raise ValueError(_DURATION_MESSAGE.format(got=_got(value)))
        seconds = parse_duration(value)
        if positive and seconds <= 0:
            raise ValueError(f"expected a duration greater than zero, got {_got(value)}")
        return seconds

    return validate


def _size(value: object) -> int:
    if not isinstance(value, str | int):
        raise ValueError(_SIZE_MESSAGE.format(got=_got(value)))
    return parse_size(value)


def _listen(value: str) -> str:
    parse_listen(value)
    return value


def _fraction(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a number from 0 to 1, got {_got(value)}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"expected a number from 0 to 1, got {_got(value)}") from None
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"expected a number from 0 to 1, got {_got(value)}")
    return number


_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]*")


def _slug(value: str) -> str:
    if not _SLUG.fullmatch(value):
        raise ValueError(
            "expected a name of lowercase letters, digits, '-' and '_' "
            f"(starting with a letter or digit), got {_got(value)}"
        )
    return value


def _nonblank(value: str) -> str:
    if not value.strip():
        raise ValueError(f"expected a non-empty string, got {_got(value)}")
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http(s) URL, got {_got(value)}")
    return value.strip()


def _email(value: str) -> str:
    if not re.fullmatch(r"[^@\s]+@[^@\s]+", value.strip()):
        raise ValueError(f"expected an email address like desk@example.org, got {_got(value)}")
    return value.strip()


_Int = Annotated[int, BeforeValidator(_no_bool)]
_Count = Annotated[int, BeforeValidator(_no_bool), Field(ge=1)]
_Float = Annotated[float, BeforeValidator(_no_bool)]
_Duration = Annotated[float, BeforeValidator(_duration())]
_Size = Annotated[int, BeforeValidator(_size), Field(ge=1)]
_Fraction = Annotated[float, BeforeValidator(_fraction)]
_Slug = Annotated[str, AfterValidator(_slug)]
_Text = Annotated[str, AfterValidator(_nonblank)]
_HttpUrl = Annotated[str, AfterValidator(_http_url)]
_Email = Annotated[str, AfterValidator(_email)]
_Listen = Annotated[str, AfterValidator(_listen)]

# Slotted dataclasses keep no class-level defaults, so read them off default instances.
_SERVICE = ServiceConfig()
_FETCH = FetchConfig()
_SMTP = SmtpConfig()


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class _ServiceModel(_Model):
    base_url: _HttpUrl = _SERVICE.base_url
    listen: _Listen = f"{_SERVICE.listen_host}:{_SERVICE.listen_port}"
    feeds_dir: _Text = str(_SERVICE.feeds_dir)
    data_dir: _Text = str(_SERVICE.data_dir)
    database_url: _Text | None = None
    dispatch_every: _Duration = _SERVICE.dispatch_every
    jitter: _Fraction = _SERVICE.jitter


class _FetchModel(_Model):
    max_concurrency: _Count = _FETCH.max_concurrency
    per_host: _Count = _FETCH.per_host
    connect_timeout: _Duration = _FETCH.connect_timeout
    read_timeout: _Duration = _FETCH.read_timeout
    total_timeout: _Duration = _FETCH.total_timeout
    max_body_bytes: _Size = _FETCH.max_body_bytes
    max_entries_per_feed: _Count = _FETCH.max_entries_per_feed
    min_interval: _Duration = _FETCH.min_interval
    max_interval: _Duration = _FETCH.max_interval
    max_backoff: _Duration = _FETCH.max_backoff
    parse_workers: Annotated[int, BeforeValidator(_no_bool), Field(ge=0, le=64)] = (
        _FETCH.parse_workers
    )


class _SmtpModel(_Model):
    host: _Text = _SMTP.host
    # None: 465 with implicit TLS, else 25 (resolved in step 4).
    port: Annotated[int, BeforeValidator(_no_bool), Field(ge=1, le=65535)] | None = None
    sender: _Email = Field(default=_SMTP.sender, alias="from")
    username: str | None = None
    password: str | None = None
    starttls: bool = _SMTP.starttls
    tls: bool = _SMTP.tls
    ca_file: _Text | None = None
    timeout: _Duration = _SMTP.timeout


class _SourceModel(_Model):
    name: _Slug
    directory: _Text | None = None
    url: _Text | None = None
    interval: _Duration = DEFAULT_SOURCE_INTERVAL
    title: str | None = None
    adaptive: bool = False

    @model_validator(mode="after")
    def _one_location(self) -> _SourceModel:
        if (self.directory is None) == (self.url is None):
            raise ValueError("expected exactly one of 'directory' or 'url'")
        return self


_Format = Literal["atom", "rss", "json"]


def _all_formats() -> list[_Format]:
    return ["atom", "rss", "json"]


class _FeedModel(_Model):
    name: _Slug
    title: _Text | None = None
    sources: Annotated[list[str], Field(min_length=1)] | None = None
    limit: _Count = 50
    formats: Annotated[list[_Format], Field(min_length=1)] = Field(default_factory=_all_formats)
    description: str | None = None


class _NotifyModel(_Model):
    webhook: _HttpUrl | None = None
    email: _Email | None = None
    command: Annotated[list[_Text], Field(min_length=1)] | None = None
    secret: _Text | None = None  # webhooks only; checked in step 4 so the error names it

    @model_validator(mode="after")
    def _one_kind(self) -> _NotifyModel:
        given = [k for k in ("webhook", "email", "command") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "expected exactly one of 'webhook: URL', 'email: ADDRESS' or 'command: [argv]'"
            )
        return self


class _WatchModel(_Model):
    name: _Slug
    title: _Text | None = None
    story: _Text | None = None
    query: _Text | None = None
    sources: Annotated[list[str], Field(min_length=1)] | None = None
    threshold: _Fraction | None = None
    limit: _Count = 50
    notify: list[_NotifyModel] = Field(default_factory=list)
    notify_backlog: bool = False

    @model_validator(mode="after")
    def _story_or_query(self) -> _WatchModel:
        if self.story is None and self.query is None:
            raise ValueError("expected a 'story', a 'query' or both")
        return self


class _RootModel(_Model):
    service: _ServiceModel = Field(default_factory=_ServiceModel)
    fetch: _FetchModel = Field(default_factory=_FetchModel)
    smtp: _SmtpModel = Field(default_factory=_SmtpModel)
    sources: list[_SourceModel] = Field(default_factory=list)
    feeds: list[_FeedModel] | None = None  # None (absent) = one feed "all" over every source
    watches: list[_WatchModel] = Field(default_factory=list)


# `key: null` / an empty section means "use the defaults", as if the key were absent.
_NULLABLE_SECTIONS = ("service", "fetch", "smtp", "sources", "feeds", "watches")


def _validate(data: Any, problems: list[_Problem]) -> _RootModel | None:
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if not (k in _NULLABLE_SECTIONS and v is None)}
    try:
        return _RootModel.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = tuple(error["loc"])
            problems.append(_Problem(loc, _humanize(error, loc)))
        return None


_COMPARISONS = {
    "greater_than": ">",
    "greater_than_equal": ">=",
    "less_than": "<",
    "less_than_equal": "<=",
}


def _humanize(error: Mapping[str, Any], loc: _Loc) -> str:
    """One pydantic error -> "expected ..., got ..." in the words of a config file."""
    kind: str = error["type"]
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    got = _got(error.get("input"))
    if kind == "missing":
        return "field required"
    if kind == "extra_forbidden":
        return _unknown_key(loc)
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"expected an integer, got {got}"
    if kind in ("float_parsing", "float_type", "finite_number"):
        return f"expected a number, got {got}"
    if kind in ("bool_parsing", "bool_type"):
        return f"expected true or false, got {got}"
    if kind == "string_type":
        return f"expected a string, got {got}"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list, got {got}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping of keys to values, got {got}"
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}, got {got}"
    if kind in _COMPARISONS:
        bound = next(iter(ctx.values()), "?")
        return f"expected a value {_COMPARISONS[kind]} {bound}, got {got}"
    if kind == "too_short":
        return "expected a non-empty list" + (
            " (omit the key for all sources)" if loc and loc[-1] == "sources" else ""
        )
    msg = str(error["msg"])
    return f"{msg[:1].lower()}{msg[1:]}, got {got}"


def _unknown_key(loc: _Loc) -> str:
    key = str(loc[-1])
    known = _known_keys(loc[:-1])
    if not known:
        return "unknown key"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    return "unknown key; expected one of " + ", ".join(repr(k) for k in known)


def _strip_annotations(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin is Union or origin is types.UnionType:
            args = [a for a in get_args(tp) if a is not type(None)]
            tp = args[0] if len(args) == 1 else Any
        else:
            return tp


def _known_keys(loc: _Loc) -> list[str]:
    """The keys the model at ``loc`` accepts, by walking the private models' annotations."""
    tp: Any = _RootModel
    for part in loc:
        tp = _strip_annotations(tp)
        if isinstance(part, int):
            args = get_args(tp)
            tp = args[0] if args else Any
            continue
        if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
            return []
        for name, info in tp.model_fields.items():
            if (info.alias or name) == part:
                tp = info.annotation
                break
        else:
            return []
    tp = _strip_annotations(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [info.alias or name for name, info in tp.model_fields.items()]
    return []


# --- step 4: cross-checks, paths, freezing -------------------------------------------------------


def _resolve(base_dir: Path, text: str) -> Path:
    # normpath, not resolve(): keep symlinks as the user wrote them, only fold "..".
    return Path(os.path.normpath(base_dir / Path(text).expanduser()))


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def _source_url(base_dir: Path, text: str) -> str:
    """An http(s) URL stays; ``file:`` URLs and plain paths become absolute local paths."""
    text = text.strip()
    scheme = _SCHEME.match(text)
    if scheme is None:
        return str(_resolve(base_dir, text))
    name = scheme.group(0)[:-1].lower()
    if name in ("http", "https"):
        return _http_url(text)
    if name == "file":
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"expected a file URL on this machine, got {_got(text)}")
        return str(_resolve(base_dir, url2pathname(parts.path)))
    raise ValueError(f"expected an http(s) URL or a local file path, got {_got(text)}")


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _check_source_refs(
    names: list[str], loc: _Loc, known: dict[str, int], problems: list[_Problem]
) -> None:
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name not in known:
            problems.append(
                _Problem((*loc, index), f"unknown source {name!r}{_suggest(name, list(known))}")
            )
        elif name in seen:
            problems.append(_Problem((*loc, index), f"source {name!r} is listed twice"))
        seen.add(name)


def _build(
    root: _RootModel,
    path: Path,
    base_dir: Path,
    lines: Mapping[_Loc, int],
    problems: list[_Problem],
) -> Config:
    def where(loc: _Loc) -> str:
        line = _line_of(loc, lines)
        return _field_path(loc) + (f", line {line}" if line is not None else "")

    svc = root.service
    host, port = parse_listen(svc.listen)
    base_url = svc.base_url if svc.base_url.endswith("/") else svc.base_url + "/"
    service = ServiceConfig(
        base_url=base_url,
        listen_host=host,
        listen_port=port,
        feeds_dir=_resolve(base_dir, svc.feeds_dir),
        data_dir=_resolve(base_dir, svc.data_dir),
        database_url=svc.database_url,
        dispatch_every=svc.dispatch_every,
        jitter=svc.jitter,
    )

    f = root.fetch
    if f.min_interval > f.max_interval:
        problems.append(
            _Problem(
                ("fetch", "min_interval"),
                f"expected at most max_interval ({format_duration(f.max_interval)}), "
                f"got {format_duration(f.min_interval)}",
            )
        )
    fetch = FetchConfig(**f.model_dump())

    s = root.smtp
    if s.tls and s.starttls:
        problems.append(
            _Problem(
                ("smtp", "tls"),
                "expected either 'tls: true' (implicit TLS, port 465) or 'starttls: true' "
                "(port 587), not both",
            )
        )
    ca_file = None
    if s.ca_file is not None:
        ca_file = _resolve(base_dir, s.ca_file)
        if not (s.tls or s.starttls):
            problems.append(
                _Problem(("smtp", "ca_file"), "expected 'tls: true' or 'starttls: true' with it")
            )
        elif (why := _why_not_a_file(ca_file)) is not None:
            problems.append(
                _Problem(
                    ("smtp", "ca_file"),
                    f"expected an existing PEM file, got {s.ca_file!r} ({ca_file} {why})",
                )
            )
    smtp = SmtpConfig(
        host=s.host,
        port=s.port if s.port is not None else 465 if s.tls else _SMTP.port,
        sender=s.sender,
        username=s.username,
        password=s.password,
        starttls=s.starttls,
        tls=s.tls,
        ca_file=ca_file,
        timeout=s.timeout,
    )

    sources: list[Source] = []
    source_index: dict[str, int] = {}
    for index, src in enumerate(root.sources):
        loc: _Loc = ("sources", index)
        if src.name in source_index:
            problems.append(
                _Problem(
                    (*loc, "name"),
                    f"duplicate source name {src.name!r} "
                    f"(also {where(('sources', source_index[src.name]))})",
                )
            )
        else:
            source_index[src.name] = index
        url = None
        if src.url is not None:
            try:
                url = _source_url(base_dir, src.url)
            except ValueError as exc:
                problems.append(_Problem((*loc, "url"), str(exc)))
        sources.append(
            Source(
                name=src.name,
                interval=src.interval,
                url=url,
                directory=_resolve(base_dir, src.directory) if src.directory else None,
                title=src.title,
                adaptive=src.adaptive,
            )
        )
    all_sources = tuple(source_index)

    # Feeds and watches publish into the same feeds_dir namespace, so their names must not
    # collide; a feed may share its source's name (issue 2's example: feed "newsroom").
    published: dict[str, str] = {}
    feeds: list[FeedSpec] = []
    if root.feeds is None:
        if all_sources:
            feeds.append(FeedSpec(DEFAULT_FEED_NAME, DEFAULT_FEED_TITLE, all_sources))
            published[DEFAULT_FEED_NAME] = "the default feed (no 'feeds' section)"
    else:
        for index, feed in enumerate(root.feeds):
            loc = ("feeds", index)
            if feed.name in published:
                problems.append(
                    _Problem(
                        (*loc, "name"),
                        f"duplicate name {feed.name!r} (also {published[feed.name]})",
                    )
                )
            else:
                published[feed.name] = where(loc)
            if feed.sources is not None:
                _check_source_refs(feed.sources, (*loc, "sources"), source_index, problems)
            formats = tuple(fmt for fmt in FEED_FORMATS if fmt in feed.formats)
            feeds.append(
                FeedSpec(
                    name=feed.name,
                    title=feed.title or feed.name,
                    sources=tuple(feed.sources) if feed.sources is not None else all_sources,
                    limit=feed.limit,
                    formats=formats,
                    description=feed.description,
                )
            )

    watches: list[Watch] = []
    # the app keeps one notifier per webhook URL, so every watch posting there must sign alike
    webhook_secrets: dict[str, tuple[str | None, str]] = {}
    for index, w in enumerate(root.watches):
        loc = ("watches", index)
        if w.name in published:
            problems.append(
                _Problem((*loc, "name"), f"duplicate name {w.name!r} (also {published[w.name]})")
            )
        else:
            published[w.name] = where(loc)
        if w.sources is not None:
            _check_source_refs(w.sources, (*loc, "sources"), source_index, problems)
        story = None
        if w.story is not None:
            story = _resolve(base_dir, w.story)
            if (why := _why_not_a_file(story)) is not None:
                problems.append(
                    _Problem(
                        (*loc, "story"),
                        f"expected an existing story file, got {w.story!r} ({story} {why})",
                    )
                )
        for i, n in enumerate(w.notify):
            if n.secret is not None and n.webhook is None:
                problems.append(
                    _Problem(
                        (*loc, "notify", i, "secret"),
                        "expected only beside 'webhook: URL' (it signs webhook requests)",
                    )
                )
            if n.webhook is not None:
                first = webhook_secrets.setdefault(
                    n.webhook, (n.secret, where((*loc, "notify", i)))
                )
                if first[0] != n.secret:
                    problems.append(
                        _Problem(
                            (*loc, "notify", i, "secret"),
                            f"expected the same secret (or none) as the other watch posting to "
                            f"this URL ({first[1]})",
                        )
                    )
        notify = tuple(
            NotifyTarget("webhook", target=n.webhook, secret=n.secret)
            if n.webhook is not None
            else NotifyTarget("email", target=n.email)
            if n.email is not None
            else NotifyTarget("command", argv=tuple(n.command or ()))
            for n in w.notify
        )
        watches.append(
            Watch(
                name=w.name,
                title=w.title or w.name,
                story=story,
                query=w.query,
                sources=tuple(w.sources) if w.sources is not None else None,
                threshold=w.threshold,
                limit=w.limit,
                notify=notify,
                notify_backlog=w.notify_backlog,
            )
        )

    return Config(
        path=path,
        service=service,
        fetch=fetch,
        smtp=smtp,
        sources=tuple(sources),
        feeds=tuple(feeds),
        watches=tuple(watches),
    )


# --- reporting -----------------------------------------------------------------------------------


def _field_path(loc: _Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(loc: _Loc, lines: Mapping[_Loc, int]) -> int | None:
    # A missing key has no line of its own: use the mapping that should have held it.
    for end in range(len(loc), -1, -1):
        line = lines.get(loc[:end])
        if line is not None:
            return line
    return None


def _iter_errors(
    problems: list[_Problem], lines: Mapping[_Loc, int], shown: str
) -> Iterator[ConfigError]:
    placed = [
        (p.line if p.line is not None else _line_of(p.loc, lines), order, p)
        for order, p in enumerate(problems)
    ]
    placed.sort(key=lambda item: (item[0] or 0, item[1]))
    for line, _, problem in placed:
        yield ConfigError(
            problem.message, path=shown, line=line, field=_field_path(problem.loc) or None
        )


def _combine(problems: list[_Problem], lines: Mapping[_Loc, int], shown: str) -> ConfigError:
    """One ConfigError for all problems: the first one's fields, every problem in ``str()``."""
    errors = list(_iter_errors(problems, lines, shown))
    first = errors[0]
    if len(errors) == 1:
        return first
    rest = [str(e) for e in errors[1:_MAX_REPORTED_ERRORS]]
    if len(errors) > _MAX_REPORTED_ERRORS:
        rest.append(f"... and {len(errors) - _MAX_REPORTED_ERRORS} more problems")
    return ConfigError(
        "\n".join([first.message, *rest]), path=first.path, line=first.line, field=first.field
    )


def _why_not_a_file(path: Path) -> str | None:
    """None for an existing file, else why not, in words for the error message. A name the
    OS refuses (too long, for one) is a config problem too, not a traceback."""
    try:
        if path.is_file():
            return None
        return "is not a file" if path.exists() else "does not exist"
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"


def _redact(url: str) -> str:
    """Hide what may be a secret in a URL shown to a person: the password, and for http(s)
    (webhooks often carry their token in the path) everything after the host."""
    parts = urlsplit(url)
    if not parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username
    netloc = f"{user}:***@{host}" if parts.password is not None else parts.netloc
    if parts.scheme.lower() in ("http", "https"):
        tail = "/..." if parts.path.strip("/") or parts.query else "/"
        return f"{parts.scheme}://{netloc}{tail}"
    return parts._replace(netloc=netloc).geturl()


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
