"""A pooled item's analysis as bytes, so a restart refills the pool without re-analysing.

Why: the pool of recent items (:mod:`.neighbours`) is memory only, and refilling it after a
restart by analysing the newest 20,000 stored entries again cost about 8 CPU seconds on every
start (every ``feedservice once`` from cron). The app saves each item as it was pooled when
it was observed (:func:`encode_item`) and a restart restores it as it was
(:func:`decode_item`): the same compact vectors, computed with the corpus statistics of their
time, the same borrowed years and the same posted keys as a process that had kept running.

The bytes are only trusted under the same :data:`ANALYSIS_TAG`: it names the format, the
analyser's version (:data:`~.text.ANALYSER_VERSION`), the pool's and the blend's parameters,
the feedservice release and the byte order, so a changed analyser or an upgrade makes every
saved item stale and the app analyses those entries again. Pure, no I/O.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array

from feedservice import __version__
from feedservice.monitor.neighbours import (
    KEEP_ENTITIES,
    KEEP_MARKS,
    KEEP_TERMS,
    POSTED_KEYS,
    PoolItem,
)
from feedservice.monitor.score import W_ENTITIES, W_MARKS, W_TERMS, Vectors
from feedservice.monitor.text import ANALYSER_VERSION

_FORMAT = 1
# format, borrowed, counts of terms, entities, marks, years and posted keys; CRC-32 of the rest
_HEADER = struct.Struct("<BBHHHHHI")
_SEP = "\n"  # keys are tokens, "e:" names and "y:"/"md:"/"wd:"/"n:" marks: never a newline


def _tag() -> str:
    params = (
        _FORMAT,
        ANALYSER_VERSION,
        __version__,
        KEEP_TERMS,
        KEEP_ENTITIES,
        KEEP_MARKS,
        POSTED_KEYS,
        W_TERMS,
        W_ENTITIES,
        W_MARKS,
        sys.byteorder,  # the weights are stored as native doubles
    )
    return f"pool{_FORMAT}-{zlib.crc32(repr(params).encode('ascii')):08x}"


ANALYSIS_TAG = _tag()


def encode_item(item: PoolItem) -> bytes | None:
    """The pooled item as bytes (None if a key cannot be written, e.g. holds a newline: the
    entry is then analysed again after a restart)."""
    vec = item.vectors
    keys = [*vec.terms, *vec.entities, *vec.marks]
    years = sorted(vec.years)
    text = _SEP.join(keys + years)
    if text.count(_SEP) != max(0, len(keys) + len(years) - 1):
        return None
    position = {k: i for i, k in enumerate(keys[: len(vec.terms) + len(vec.entities)])}
    weights = array("d", [*vec.terms.values(), *vec.entities.values(), *vec.marks.values()])
    try:
        posted = array("H", [position[k] for k, _ in item.keys])
        body = weights.tobytes() + posted.tobytes() + text.encode("utf-8")
        header = _HEADER.pack(
            _FORMAT,
            int(item.borrowed),
            len(vec.terms),
            len(vec.entities),
            len(vec.marks),
            len(years),
            len(posted),
            zlib.crc32(body),
        )
    except (KeyError, OverflowError, struct.error, UnicodeEncodeError):
        return None  # not a shape this format holds (e.g. a key outside its vectors)
    return header + body


def decode_item(entry_id: str, title: str, data: bytes) -> PoolItem:
    """Inverse of :func:`encode_item` for the entry ``entry_id`` titled ``title``.

    Raises ValueError when ``data`` is not what :func:`encode_item` wrote (the caller then
    analyses the entry again). Check :data:`ANALYSIS_TAG` before: bytes of another tag may
    decode and still be wrong."""
    try:
        header = _HEADER.unpack_from(data)
        fmt, borrowed, n_terms, n_entities, n_marks, n_years, n_keys, crc = header
        if fmt != _FORMAT or borrowed > 1:
            raise ValueError(f"not a saved pool item (format {fmt}, borrowed {borrowed})")
        if zlib.crc32(memoryview(data)[_HEADER.size :]) != crc:
            raise ValueError("not a saved pool item: damaged (checksum)")
        n_weights = n_terms + n_entities + n_marks
        at = _HEADER.size
        weights = array("d")
        weights.frombytes(data[at : at + 8 * n_weights])
        at += 8 * n_weights
        posted = array("H")
        posted.frombytes(data[at : at + 2 * n_keys])
        at += 2 * n_keys
        text = data[at:].decode("utf-8")
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"not a saved pool item: {exc}") from exc
    words = text.split(_SEP) if text else []
    if len(weights) != n_weights or len(posted) != n_keys or len(words) != n_weights + n_years:
        raise ValueError("not a saved pool item: its parts do not match its header")
    t_end = n_terms
    e_end = n_terms + n_entities
    terms = dict(zip(words[:t_end], weights[:t_end], strict=True))
    entities = dict(zip(words[t_end:e_end], weights[t_end:e_end], strict=True))
    marks = dict(zip(words[e_end:n_weights], weights[e_end:], strict=True))
    if len(terms) + len(entities) + len(marks) != n_weights:
        raise ValueError("not a saved pool item: a key is listed twice")
    vectors = Vectors(terms, entities, marks, frozenset(words[n_weights:]))
    keys = []
    for i in posted:
        if i >= e_end:
            raise ValueError("not a saved pool item: a posted key is not a word or a name")
        key = words[i]
        # the same product as distinctive_keys computed, so the same float
        keys.append((key, W_TERMS * terms[key] if i < t_end else W_ENTITIES * entities[key]))
    return PoolItem(entry_id, title, vectors, tuple(keys), bool(borrowed))
