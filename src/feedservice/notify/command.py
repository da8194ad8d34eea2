"""Command channel: run a program with the notification in its arguments, never via a shell.

Each argument of the configured argv is a ``str.format`` template over the placeholders in
:data:`PLACEHOLDERS`. The values are substituted once and passed to ``execve`` as they are, so
a title such as ``x; rm -rf ~`` or ``$(reboot)`` reaches the program as literal text: there
is no shell to interpret it, and a ``{link}`` inside a title is not expanded again.
Templates are checked when the notifier is built, so a typo in the config fails at start-up,
not at the first match hours later.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import string
import tempfile
from typing import IO, Any

from feedservice.errors import ConfigError, NotifyError
from feedservice.notify._base import Notification

__all__ = ["PLACEHOLDERS", "CommandNotifier", "render_argv"]

PLACEHOLDERS: tuple[str, ...] = (
    "title",
    "link",
    "watch",
    "watch_title",
    "score",
    "source",
    "entry_id",
    "reasons",
    "published",
    "key",
)
_STDERR_TAIL = 2000


def _values(n: Notification) -> dict[str, Any]:
    """The placeholder values. ``score`` stays a float so ``{score:.2f}`` works; the rest are
    str with NUL removed (execve cannot carry a NUL inside an argument)."""
    text = {
        "title": n.title,
        "link": n.link or "",
        "watch": n.watch,
        "watch_title": n.watch_title,
        "source": n.source,
        "entry_id": n.entry_id,
        "reasons": "; ".join(n.reasons),
        "published": n.published.isoformat().replace("+00:00", "Z"),
        "key": n.key,
    }
    values: dict[str, Any] = {k: v.replace("\0", "") for k, v in text.items()}
    values["score"] = n.score
    return values


_SAMPLE_VALUES: dict[str, Any] = {name: "x" for name in PLACEHOLDERS} | {"score": 0.5}


def _check_template(template: str, index: int) -> None:
    """Raise ConfigError unless every field in ``template`` is a bare known placeholder."""
    where = f"command argv[{index}] {template!r}"
    try:
        fields = [
            field for _, field, _, _ in string.Formatter().parse(template) if field is not None
        ]
    except ValueError as exc:  # a lone "{" or "}"
        raise ConfigError(f"{where}: {exc} (write {{{{ and }}}} for literal braces)") from exc
    for field in fields:
        # Only bare names: "{0}" / "{}" would be positional, and "{title.__class__}" or
        # "{title[0]}" would reach into objects; neither is part of the contract.
        if field not in PLACEHOLDERS:
            known = ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
            raise ConfigError(f"{where}: unknown placeholder {{{field}}}; known: {known}")
    try:
        template.format_map(_SAMPLE_VALUES)
    except (ValueError, TypeError, KeyError, IndexError) as exc:  # e.g. "{title:.2f}"
        raise ConfigError(f"{where}: {exc}") from exc


def render_argv(argv: tuple[str, ...], n: Notification) -> tuple[str, ...]:
    """``argv`` with the placeholders of ``n`` substituted, one argument at a time.

    Assumes ``argv`` passed the build-time check (see :class:`CommandNotifier`).
    """
    values = _values(n)
    return tuple(arg.format_map(values) for arg in argv)


class CommandNotifier:
    """Run ``argv`` (placeholders substituted) for each notification, without a shell.

    stdin is /dev/null, stdout is discarded, the tail of stderr goes into the error message.
    Success is the command's own exit status 0; background processes it leaves behind are
    not waited for. The command runs in its own session so that on timeout or cancellation
    the whole process group (the command and anything it started) is killed.

    Raises ConfigError at construction for an empty argv, an unknown placeholder
    (``{foo}``), a positional or attribute field, or a format spec the value cannot take.
    """

    channel = "command"

    def __init__(self, argv: tuple[str, ...], *, timeout: float = 30.0) -> None:
        if not argv or not argv[0]:
            raise ConfigError("command: expected a non-empty argv, e.g. [notify-send, '{title}']")
        if timeout <= 0:
            raise ConfigError(f"command: timeout must be positive, got {timeout}")
        for index, template in enumerate(argv):
            _check_template(template, index)
        self.argv = tuple(argv)
        self.label = f"command {argv[0]}"
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"CommandNotifier({self.argv!r})"

    async def send(self, n: Notification) -> None:
        """Run the command once for ``n``; exit status 0 means delivered.

        Raises NotifyError: permanent when the executable does not exist or may not be run,
        or when the arguments are longer than the OS takes;
        transient for a non-zero exit, death by a signal, a timeout (after killing the
        process group) and other OS errors while starting it.
        """
        args = render_argv(self.argv, n)
        # stderr goes to an anonymous temporary file, not a pipe: asyncio's wait() also waits
        # for pipes to close, so a program that leaves a background process holding a pipe
        # (xdg-open starting a browser, say) would look hung until the timeout.
        try:
            errfile = tempfile.TemporaryFile()  # noqa: SIM115 - entered by the with below
        except OSError as exc:  # temporary directory full or unwritable: may pass
            raise NotifyError(f"cannot capture stderr: {exc}", channel=self.channel) from exc
        with errfile:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *args,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=errfile,
                    start_new_session=True,
                )
            except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
                raise NotifyError(
                    f"cannot run {args[0]!r}: {exc.strerror or exc}",
                    channel=self.channel,
                    permanent=True,
                ) from exc
            except OSError as exc:  # e.g. too many open files / processes: may pass
                if exc.errno == errno.E2BIG:
                    # The same notification always renders to the same arguments, so no
                    # retry can pass the OS's limit (128 KiB per argument on Linux).
                    size = sum(len(a.encode("utf-8", "surrogateescape")) for a in args)
                    raise NotifyError(
                        f"cannot run {args[0]!r}: arguments too long for the OS ({size} bytes; "
                        "a very long title or link?)",
                        channel=self.channel,
                        permanent=True,
                    ) from exc
                raise NotifyError(f"cannot run {args[0]!r}: {exc}", channel=self.channel) from exc

            try:
                async with asyncio.timeout(self._timeout):
                    returncode = await proc.wait()
            except TimeoutError as exc:
                await _kill(proc)
                raise NotifyError(
                    f"{args[0]!r} did not finish within {self._timeout:g} s; killed",
                    channel=self.channel,
                ) from exc
            except BaseException:
                # Cancelled (daemon shutting down): do not leave the command running unowned.
                await _kill(proc)
                raise
            if returncode == 0:
                return
            stderr = _read_tail(errfile, _STDERR_TAIL)

        how = f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
        tail = " ".join(stderr.decode("utf-8", "replace").split())
        raise NotifyError(
            f"{args[0]!r} failed: {how}{f': {tail}' if tail else ''}", channel=self.channel
        )


def _read_tail(file: IO[bytes], limit: int) -> bytes:
    """The last ``limit`` bytes of ``file`` (a small local temporary file)."""
    size = file.seek(0, os.SEEK_END)
    file.seek(max(0, size - limit))
    return file.read(limit)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the command's process group and reap it."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    await proc.wait()
