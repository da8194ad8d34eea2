"""The monitor: which new entries relate to a watch's story or query, and why (issue 4).

Pure: no I/O, no clock. The app builds a :class:`Monitor` from the configured watches, feeds it
every new entry (:meth:`Monitor.observe`, then :meth:`Monitor.match`) and persists what must
survive a restart: :class:`CorpusStats` as JSON, reported matches and MinHash signatures (each
watch's strongest matches are given back with :meth:`Monitor.add_anchors`), and each pooled
item of the recent items the neighbourhood score draws on, as bytes from :func:`encode_item`
under :data:`ANALYSIS_TAG`, so a restart need not analyse them again.
"""

from __future__ import annotations

from feedservice.monitor.dedup import near_duplicate, signature
from feedservice.monitor.engine import ANCHOR_KEEP, ANCHOR_SCORE, Monitor, WatchInput
from feedservice.monitor.neighbours import PoolItem, RecentItems
from feedservice.monitor.query import Query, parse_query
from feedservice.monitor.saved import ANALYSIS_TAG, decode_item, encode_item
from feedservice.monitor.score import DEFAULT_THRESHOLD, CorpusStats

__all__ = [
    "ANALYSIS_TAG",
    "ANCHOR_KEEP",
    "ANCHOR_SCORE",
    "DEFAULT_THRESHOLD",
    "CorpusStats",
    "Monitor",
    "PoolItem",
    "Query",
    "RecentItems",
    "WatchInput",
    "decode_item",
    "encode_item",
    "near_duplicate",
    "parse_query",
    "signature",
]
