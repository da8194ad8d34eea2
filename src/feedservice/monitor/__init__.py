"""The monitor: which new entries relate to a watch's story or query, and why (issue 4).

Pure: no I/O, no clock. The app builds a :class:`Monitor` from the configured watches, feeds it
every new entry (:meth:`Monitor.observe`, then :meth:`Monitor.match`) and persists what must
survive a restart (:class:`CorpusStats` as JSON, reported matches and MinHash signatures);
the pool of recent items (:class:`RecentItems`) the neighbourhood score draws on is memory only.
"""

from __future__ import annotations

from feedservice.monitor.dedup import near_duplicate, signature
from feedservice.monitor.engine import Monitor, WatchInput
from feedservice.monitor.neighbours import RecentItems
from feedservice.monitor.query import Query, parse_query
from feedservice.monitor.score import DEFAULT_THRESHOLD, CorpusStats

__all__ = [
    "DEFAULT_THRESHOLD",
    "CorpusStats",
    "Monitor",
    "Query",
    "RecentItems",
    "WatchInput",
    "near_duplicate",
    "parse_query",
    "signature",
]
