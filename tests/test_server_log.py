"""The server's request logger: a request aiohttp cannot parse is one warning line; an error
in our own handlers keeps its level and traceback."""

from __future__ import annotations

import logging
import sys

from aiohttp.http_exceptions import BadHttpMessage

from feedservice.server import request_logger


def _record(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except type(exc):
        info = sys.exc_info()
    return logging.LogRecord(
        "feedservice.server", logging.ERROR, __file__, 1,
        "Error handling request from %s", ("127.0.0.1",), info,
    )  # fmt: skip


def test_a_malformed_request_is_one_warning_line() -> None:
    record = _record(BadHttpMessage("Invalid character in Content-Length:\n  b'abc'\n  ^"))
    assert request_logger().filter(record)
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert record.getMessage() == (
        "Error handling request from 127.0.0.1: 400 Invalid character in Content-Length: b'abc' ^"
    )


def test_a_handler_error_keeps_its_traceback() -> None:
    record = _record(ValueError("our bug"))
    assert request_logger().filter(record)
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert record.getMessage() == "Error handling request from 127.0.0.1"


def test_the_filter_is_added_once() -> None:
    assert request_logger() is request_logger()
    assert len(request_logger().filters) == 1
