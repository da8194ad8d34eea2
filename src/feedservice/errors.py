"""The feedservice exception tree.

Every error feedservice raises on purpose derives from :class:`FeedServiceError`;
foreign exceptions (aiohttp, lxml, SQLAlchemy, YAML, ...) are translated at the
module that talks to the foreign library, so callers only ever catch ours::

    FeedServiceError
      ConfigError (+ValueError)      file, line, field path, what was expected
      SourceError(source, url)
        FetchError(status)           HTTP / file retrieval failed
        ParseError                   bytes are not a feed / story we can read
      StorageError                   the store could not read or write
      PublishError                   a feed could not be rendered or written
      NotifyError                    a notification could not be delivered
      QueryError (+ValueError)       a watch's boolean query does not parse

"Not modified" is a return value, never an exception.
"""

from __future__ import annotations


class FeedServiceError(Exception):
    """Root of every error feedservice raises on purpose."""


class ConfigError(FeedServiceError, ValueError):
    """The configuration is invalid.

    ``str()`` reads ``path:line: field.path: what was expected, got ...``.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.field = field
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.path:
            where = self.path
            if self.line:
                where += f":{self.line}"
            where += ": "
        if self.field:
            where += f"{self.field}: "
        return where + self.message


class SourceError(FeedServiceError):
    """Something went wrong with one source; carries the source name and URL/path."""

    def __init__(self, message: str, *, source: str | None = None, url: str | None = None) -> None:
        self.message = message
        self.source = source
        self.url = url
        super().__init__(self._render())

    def _render(self) -> str:
        ctx = [f"source {self.source!r}" if self.source else "", self.url or ""]
        prefix = ", ".join(c for c in ctx if c)
        return f"{prefix}: {self.message}" if prefix else self.message


class FetchError(SourceError):
    """Retrieval failed: HTTP status, timeout, connection, size cap or a refused redirect.

    ``status`` is the HTTP status code when there was a response, else ``None``.
    ``retry_after`` (seconds) is set when the server asked us to wait (429/503).
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        url: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.retry_after = retry_after
        super().__init__(message, source=source, url=url)


class ParseError(SourceError):
    """The bytes are not a feed or story we can read.

    ``path`` names the offending story file; ``line`` is set when known.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        url: str | None = None,
        path: str | None = None,
        line: int | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.detail = message  # without the path prefix, for callers that know a fuller path
        if path:
            message = f"{path}{f':{line}' if line else ''}: {message}"
        super().__init__(message, source=source, url=url)


class StorageError(FeedServiceError):
    """The store could not read or write (disk full, locked, corrupt, schema too new)."""


class PublishError(FeedServiceError):
    """A feed could not be rendered or written."""


class NotifyError(FeedServiceError):
    """A notification could not be delivered; ``permanent`` means retrying will not help.

    ``retry_after`` (seconds) is set when the receiver asked us to wait (HTTP 429/503).
    """

    def __init__(
        self,
        message: str,
        *,
        channel: str = "",
        permanent: bool = False,
        retry_after: float | None = None,
    ) -> None:
        self.channel = channel
        self.permanent = permanent
        self.retry_after = retry_after
        super().__init__(f"{channel}: {message}" if channel else message)


class QueryError(FeedServiceError, ValueError):
    """A watch query has a syntax error; ``column`` is 1-based."""

    def __init__(self, message: str, *, column: int, watch: str | None = None) -> None:
        self.column = column
        self.watch = watch
        where = f"watch {watch!r}: " if watch else ""
        super().__init__(f"{where}query column {column}: {message}")
