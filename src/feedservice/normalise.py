"""Raw items -> clean :class:`~feedservice.model.Entry` records (issue 2, item 4).

Pure functions, no I/O, no clock: the caller passes ``now``. What happens to one item:

* a **stable id**: the item's own guid/id; else ``urn:uuid:`` + uuid5 of the canonical link;
  else (stories) uuid5 of ``source/path``; else uuid5 of source + title + published. Nothing
  that may change between runs (``now``, the permalink base, file mtimes) feeds an id, so a
  restart or a republish never duplicates an entry in a reader.
* **dates** as aware UTC; an item without any date gets ``now`` and ``dated=False`` (the store
  keeps the first-seen time stable across restarts).
* a **plain-text title**, an **absolute http(s) link** (stories get a permalink on the daemon).
* **sanitised HTML** (nh3 / ammonia) with relative ``href``/``src`` resolved against the
  item's base, then **repeated paragraphs removed** (see :func:`dedupe_blocks`).
* a **summary** (the lead paragraph, <= 300 characters, cut at a word boundary).
* **entities and keywords** for the monitor (issue 4, item 2): :func:`extract_entities`,
  :func:`extract_keywords`; both are public so the monitor scores its watches' stories with
  exactly the same rules.
* a **content hash** over what a reader sees, so the store moves ``updated`` only on change.

Speed (this runs on every entry from every source): the HTML is sanitised once by nh3 (Rust);
blocks are split with one regular expression over nh3's well-formed output rather than a DOM
parse, and their plain texts are taken in one pass; for the near-repeat test, paragraphs are
compared by their numbers first (only the words holding a digit are folded), then by a cheap
raw-word test, and tokenised in full only when both say a pair might be one. nh3 Cleaners are
memoised per base (building one costs more than cleaning an item). The entity scanner looks
only at tokens that do not start in lower case, classifies each token once (memoised: the same
tokens recur across items), takes a short path for a one-word name, and memoises numbers and
name runs; keywords are counted with map/filter/Counter in C. Every memo is bounded and holds
a pure function of its key (``functools.lru_cache``, or a dict read by subscript where the
call itself was the cost, emptied when full): results never depend on what was normalised
before. ``bench/normalise.py`` measures it against feedparser's sanitiser on the shared
real-world feeds and on the items ``bench/poll.py`` serves (numbers in docs/benchmarks.md);
``analyse=False`` skips entities and keywords.
"""

from __future__ import annotations

import functools
import hashlib
import html
import json
import operator
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain, compress
from typing import Literal, TypeVar
from urllib.parse import urljoin, urlsplit, urlunsplit

import nh3

from feedservice.model import Entry, RawItem
from feedservice.xmlchars import xml_safe

__all__ = [
    "ALLOWED_ATTRIBUTES",
    "ALLOWED_TAGS",
    "ENTITY_ALIASES",
    "ID_NAMESPACE",
    "NEAR_DUPLICATE_THRESHOLD",
    "STOPWORDS",
    "SUMMARY_MAX_CHARS",
    "block_similarity",
    "canonical_link",
    "content_hash",
    "dedupe_blocks",
    "extract_entities",
    "extract_keywords",
    "html_to_text",
    "normalise_item",
    "normalise_items",
    "sanitise_html",
    "stable_id",
    "stem",
    "story_slug",
]

#: The uuid5 namespace of every derived entry id. Never change it: every derived id changes.
ID_NAMESPACE = uuid.UUID("5b0c7d6e-8f4a-5d2b-9c1e-3a7f6e2d4b10")

SUMMARY_MAX_CHARS = 300
_TITLE_FROM_SUMMARY_CHARS = 80
_UNTITLED = "(untitled)"
_V = TypeVar("_V")


class _Memo(dict[str, _V]):
    """A bounded memo of a pure function of one string, read at C speed (subscript, or
    ``map`` over ``__getitem__``); emptied when full, so it never holds more than
    ``limit`` entries."""

    __slots__ = ("fn", "limit")

    def __init__(self, fn: Callable[[str], _V], limit: int) -> None:
        super().__init__()
        self.fn = fn
        self.limit = limit

    def __missing__(self, key: str) -> _V:
        if len(self) >= self.limit:
            self.clear()
        value = self[key] = self.fn(key)
        return value


def _words(text: str) -> frozenset[str]:
    """A word list written as running text (easier to read and extend than a list literal)."""
    return frozenset(text.split())


# --- sanitising ---------------------------------------------------------------------------------

#: What survives sanitising: text structure, links, images and tables; never script, style,
#: forms, frames, event handlers or ``style`` attributes.
ALLOWED_TAGS: frozenset[str] = frozenset(
    {
        "p", "br", "hr", "a", "em", "strong", "b", "i", "u", "s", "small", "mark",
        "blockquote", "q", "cite", "code", "pre", "kbd", "samp", "var",
        "ul", "ol", "li", "dl", "dt", "dd",
        "h1", "h2", "h3", "h4", "h5", "h6",
        "img", "figure", "figcaption",
        "table", "caption", "thead", "tbody", "tfoot", "tr", "th", "td", "colgroup", "col",
        "span", "sub", "sup", "abbr", "del", "ins", "time",
    }
)  # fmt: skip
_COMMON_ATTRIBUTES = frozenset({"title"})
ALLOWED_ATTRIBUTES: dict[str, frozenset[str]] = {
    "a": frozenset({"href", "title"}),
    "img": frozenset({"src", "alt", "title", "width", "height"}),
    "abbr": frozenset({"title"}),
    "td": frozenset({"colspan", "rowspan"}),
    "th": frozenset({"colspan", "rowspan", "scope"}),
    "time": frozenset({"datetime"}),
    "*": _COMMON_ATTRIBUTES,
}
# Only web and mail links survive: javascript:, data:, vbscript: and friends are dropped.
_URL_SCHEMES = frozenset({"http", "https", "mailto"})
# Dropped together with their content (not just unwrapped).
_CLEAN_CONTENT_TAGS = frozenset({"script", "style", "noscript", "template", "iframe", "object"})

_TEXT_CLEANER = nh3.Cleaner(
    tags=set(), clean_content_tags=set(_CLEAN_CONTENT_TAGS), attributes={}, link_rel=None
)


def sanitise_html(fragment: str, *, base: str | None) -> str:
    """Return ``fragment`` sanitised, with relative ``href``/``src`` made absolute against ``base``.

    With no absolute http(s) ``base`` a relative URL cannot be resolved, so it is removed: a
    relative URL inside a feed would resolve against the feed's own address, which is wrong.
    """
    return xml_safe(_cleaner(base if base and _is_http_url(base) else None).clean(fragment))


# A memo, not state: a Cleaner is immutable and depends only on the base. Building one costs
# about 35 us (the sets are converted for Rust), more than cleaning a 2 KB item; the items of
# one feed share their base, so a small memo saves nearly every build.
@functools.lru_cache(maxsize=256)
def _cleaner(base: str | None) -> nh3.Cleaner:
    url_relative: Literal["deny"] | tuple[Literal["rewrite_with_base"], str] = (
        ("rewrite_with_base", base) if base else "deny"
    )
    try:
        return nh3.Cleaner(
            tags=set(ALLOWED_TAGS),
            clean_content_tags=set(_CLEAN_CONTENT_TAGS),
            attributes={tag: set(attrs) for tag, attrs in ALLOWED_ATTRIBUTES.items()},
            url_schemes=set(_URL_SCHEMES),
            url_relative=url_relative,
            link_rel="noopener noreferrer",
        )
    except ValueError:
        # a base urlsplit accepts but nh3's URL parser refuses ("http://%zz/": invalid
        # international domain name): relative URLs cannot be resolved, so they are removed
        if base is None:
            raise
        return _cleaner(None)


def html_to_text(fragment: str) -> str:
    """Plain text of an HTML fragment: tags stripped, entities decoded, whitespace collapsed."""
    if "<" not in fragment and "&" not in fragment:
        return _collapse_ws(fragment)
    return _collapse_ws(xml_safe(html.unescape(_TEXT_CLEANER.clean(fragment))))


_BLOCKISH_TAG_RE = re.compile(
    r"<(?:br|/?(?:p|li|dt|dd|td|th|tr|h[1-6]|blockquote|pre|figcaption|caption|ul|ol|dl|table"
    r"|figure|hr))\b[^>]*>"
)
_ANY_TAG_RE = re.compile(r"<[^>]*>")


def _sanitised_text(fragment: str) -> str:
    """Plain text of HTML that nh3 produced (well formed, "<" always escaped in text): two
    regular expressions instead of a second nh3 pass."""
    if "<" in fragment:
        fragment = _ANY_TAG_RE.sub("", _BLOCKISH_TAG_RE.sub(" ", fragment))
    if "&" in fragment:
        fragment = html.unescape(fragment)
    return _collapse_ws(fragment)


_UNIT_BREAK = "\x00"  # never in nh3's output (html5ever drops or replaces NUL)


def _sanitised_texts(fragments: list[str]) -> list[str]:
    """``[_sanitised_text(f) for f in fragments]``, with each regular expression and the
    unescaping run once over the fragments joined by :data:`_UNIT_BREAK`. A tag never spans
    two of nh3's units; should a substitution eat a break anyway, the fragments are done
    one by one."""
    if len(fragments) < 2:
        return list(map(_sanitised_text, fragments))
    joined = _UNIT_BREAK.join(fragments)
    breaks = len(fragments) - 1
    if joined.count(_UNIT_BREAK) != breaks:
        return list(map(_sanitised_text, fragments))
    if "<" in joined:
        joined = _ANY_TAG_RE.sub("", _BLOCKISH_TAG_RE.sub(" ", joined))
        if joined.count(_UNIT_BREAK) != breaks:
            return list(map(_sanitised_text, fragments))
    if "&" in joined:
        # an entity never spans a break either: nh3 writes each one whole ("&amp;"); and
        # no character reference stands for NUL (html.unescape gives U+FFFD)
        joined = html.unescape(joined)
    parts = joined.split(_UNIT_BREAK)
    if len(parts) != len(fragments):  # (cannot happen: see above)
        return list(map(_sanitised_text, fragments))
    return list(map(_collapse_ws, parts))


def _collapse_ws(text: str) -> str:
    return " ".join(text.split())  # several times faster than re.sub(r"\s+", ...)


def _text_to_html(text: str) -> str:
    """Plain text -> ``<p>`` paragraphs: blank-line separated, or one per line when none are."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    if not text:
        return ""
    chunks = re.split(r"\n\s*\n", text) if re.search(r"\n\s*\n", text) else text.split("\n")
    return "".join(
        f"<p>{html.escape(_collapse_ws(c), quote=False)}</p>" for c in chunks if c.strip()
    )


# --- splitting HTML into blocks -----------------------------------------------------------------

# nh3 (html5ever) output is well formed: every attribute value is double-quoted with "<", ">"
# and '"' escaped, so one regular expression finds every tag reliably.
_TAG_RE = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)[^>]*>")
_VOID_TAGS = frozenset({"br", "hr", "img", "col", "wbr"})
_BLOCK_TAGS = frozenset(
    {
        "p", "blockquote", "pre", "ul", "ol", "dl", "li", "dt", "dd", "table", "figure",
        "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    }
)  # fmt: skip
# Lists are not compared as wholes: their items are the units (a list item repeated in a
# later list is as much a repeat as a paragraph).
_CONTAINER_TAGS = frozenset({"ul", "ol", "dl"})
_HEADING_TAGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})


@dataclass(slots=True)
class _Piece:
    """A slice of the sanitised HTML: a unit (may be dropped) or structure (kept verbatim)."""

    html: str
    unit: bool
    tag: str = ""  # the unit's element name; "" for an inline run
    container: int = -1  # index of the opening container piece, for list items


def _split_pieces(fragment: str) -> list[_Piece]:
    """Split sanitised HTML into top-level units; list containers are opened into their items."""
    pieces: list[_Piece] = []
    depth = 0
    start = 0  # start of the current top-level element or inline run
    start_tag = ""
    container_open = -1  # index of the open container's piece while inside a list
    item_start = -1
    item_tag = ""
    pos = 0

    def flush_inline(end: int) -> None:
        chunk = fragment[start:end]
        if chunk.strip():
            pieces.append(_Piece(chunk, unit=True))
        elif chunk:
            pieces.append(_Piece(chunk, unit=False))

    for m in _TAG_RE.finditer(fragment):
        closing, name = m.group(1) == "/", m.group(2).lower()
        pos = m.end()
        if depth == 0:
            if closing or name not in _BLOCK_TAGS:
                continue  # inline content at top level: part of the current run
            flush_inline(m.start())
            start, start_tag = m.start(), name
            if name in _VOID_TAGS:
                pieces.append(_Piece(m.group(0), unit=False))
                start = pos
                continue
            depth = 1
            if name in _CONTAINER_TAGS:
                pieces.append(_Piece(m.group(0), unit=False))
                container_open = len(pieces) - 1
                item_start = pos
            continue
        if name in _VOID_TAGS:
            continue
        if not closing:
            depth += 1
            if depth == 2 and container_open >= 0:
                # text between items (rare) stays as structure
                between = fragment[item_start : m.start()]
                if between:
                    pieces.append(_Piece(between, unit=False, container=container_open))
                item_start, item_tag = m.start(), name
            continue
        depth -= 1
        if depth == 1 and container_open >= 0:
            pieces.append(
                _Piece(fragment[item_start:pos], unit=True, tag=item_tag, container=container_open)
            )
            item_start = pos
        elif depth == 0:
            if container_open >= 0:
                tail = fragment[item_start : m.start()]
                if tail:
                    pieces.append(_Piece(tail, unit=False, container=container_open))
                pieces.append(_Piece(m.group(0), unit=False, container=container_open))
                container_open = -1
            else:
                pieces.append(_Piece(fragment[start:pos], unit=True, tag=start_tag))
            start = pos
        depth = max(depth, 0)
    if depth == 0:
        flush_inline(len(fragment))
    else:  # unbalanced input (not from nh3): keep the rest as one unit
        pieces.append(_Piece(fragment[start:], unit=True, tag=start_tag))
    return _split_inline_runs(pieces)


_BR_BREAK_RE = re.compile(r"(?:<br>\s*){2,}")


def _split_inline_runs(pieces: list[_Piece]) -> list[_Piece]:
    """Feeds often separate paragraphs with ``<br><br>``; treat each such chunk as a unit."""
    out: list[_Piece] = []
    for piece in pieces:
        if not piece.unit or piece.tag or "<br>" not in piece.html:
            out.append(piece)
            continue
        last = 0
        for m in _BR_BREAK_RE.finditer(piece.html):
            chunk = piece.html[last : m.start()]
            if chunk:
                out.append(_Piece(chunk, unit=bool(chunk.strip())))
            out.append(_Piece(m.group(0), unit=False))
            last = m.end()
        chunk = piece.html[last:]
        if chunk:
            out.append(_Piece(chunk, unit=bool(chunk.strip())))
    return out


# --- near-duplicate paragraphs ------------------------------------------------------------------

# British -> American spelling, so "defence"/"defense" and "centred"/"centered" compare equal.
# Whole-word pairs first; then a few suffix rules, applied only to words long enough that the
# rule cannot hit a short common word.
_SPELLING = {
    "defence": "defense", "offence": "offense", "licence": "license", "practise": "practice",
    "centre": "center", "centres": "centers", "centred": "centered", "centring": "centering",
    "metre": "meter", "metres": "meters", "litre": "liter", "litres": "liters",
    "theatre": "theater", "fibre": "fiber", "calibre": "caliber", "programme": "program",
    "programmes": "programs", "travelled": "traveled", "travelling": "traveling",
    "cancelled": "canceled", "labelled": "labeled", "modelled": "modeled",
    "grey": "gray", "amongst": "among", "whilst": "while", "towards": "toward",
    "aeroplane": "airplane", "catalogue": "catalog", "dialogue": "dialog", "tyre": "tire",
}  # fmt: skip
_OUR_RE = re.compile(
    r"^(colo|favo|hono|labo|neighbo|behavio|harbo|rumo|vigo|humo|flavo|armo|endeavo|savo)ur"
)
# -ise/-isation/-yse -> -ize/-ization/-yze (organised, realisation, analysed, ...)
_ISE_RE = re.compile(r"(?<=\w{3})([iy])s(ation|ations|ing|ed|es|e)$")
# Real -ise words that must not be folded (folding them would only make keywords odd).
_ISE_KEEP = _words(
    """advertise advertised advertises advertising advise advised advises comprise comprised
    comprises compromise compromised compromises devise devised enterprise enterprises exercise
    exercised exercises expertise franchise improvise improvised merchandise premise premises
    promise promised promises revise revised revises supervise supervised surmise surprise
    surprised surprises televise televised otherwise precise concise paradise reprise chastise
    despise despised disguise disguised demise raise raised raises praise praised cruise"""
)
# Characters around a word that are not part of it: quotes, brackets, sentence punctuation.
_STRIP = "\"“”‘’'()[]{}«»,.;:!?—–…*<>|"


def _raw_words(text: str) -> list[str]:
    """Lower-case whitespace tokens, dashes between words counting as spaces. ``str.split``
    is about three times faster than a word regular expression; the punctuation left on a
    token is removed by :func:`_norm_word`, once per distinct token thanks to its memo."""
    low = text.lower()
    if "—" in low or "–" in low:
        low = low.replace("—", " ").replace("–", " ")
    return low.split()


def _bare_word(raw: str) -> str:
    """A token without surrounding punctuation, possessive, dots and apostrophes ("China’s,"
    -> "china", "u.s." -> "us"); "" when nothing word-like is left."""
    word = raw.strip(_STRIP).replace("’", "'")
    if word.endswith("'s"):
        word = word[:-2]
    word = word.replace("'", "").replace(".", "")
    return word if word[:1].isalnum() else ""


def _fold_word(raw: str) -> str:
    """One lower-case token -> its comparison form: bare (see :func:`_bare_word`), British
    spelling folded to American, plural stemmed."""
    word = _bare_word(raw)
    if not word:
        return ""
    folded = _SPELLING.get(word)
    if folded is None:
        folded = _OUR_RE.sub(r"\1r", word) if "our" in word else word
        if (
            folded is word
            and len(word) > 6
            and ("is" in word or "ys" in word)
            and word not in _ISE_KEEP
        ):
            folded = _ISE_RE.sub(r"\1z\2", word)
    return stem(folded)


# A memo, not state: the result depends only on the argument, and the size is bounded.
_norm_word = _Memo(_fold_word, 1 << 16).__getitem__


def _norm_words(text: str) -> frozenset[str]:
    """The alphabet in which "small edits" disappear: see :func:`_norm_word` (the set of a
    text's folded words; map and frozenset iterate in C, the folding is memoised)."""
    return frozenset(map(_norm_word, _raw_words(text))) - _NO_WORD


_NO_WORD = frozenset({""})


class _Signature:
    """What a paragraph is compared by: its folded words, and the two guards (its numbers,
    and its names, worked out only when a comparison gets that far)."""

    __slots__ = ("_names", "numbers", "text", "words")

    def __init__(self, text: str, words: frozenset[str] | None = None) -> None:
        self.text = text
        self.words = words = _norm_words(text) if words is None else words
        self.numbers = frozenset(compress(words, map(str.isdigit, map(_FIRST, words))))
        self._names: frozenset[str] | None = None

    @property
    def names(self) -> frozenset[str]:
        """Folded capitalised words; function words ("The") excluded, acronyms ("US") not."""
        if self._names is None:
            names = set()
            for w in self.text.split():
                if w[:1].isupper():
                    core = w.strip(_STRIP)
                    low = core.lower()
                    if low in STOPWORDS and not _is_acronym(core):
                        continue
                    name = _norm_word(low)
                    if name:
                        names.add(name)
            self._names = frozenset(names)
        return self._names


def block_similarity(a: str, b: str) -> float:
    """Near-duplicate score of two plain texts in [0, 1] (see :data:`NEAR_DUPLICATE_THRESHOLD`):
    the Jaccard index of their folded word sets; 0 when their numbers differ or when their
    capitalised words (names) overlap less than half."""
    return _signature_similarity(_Signature(a), _Signature(b))


def _signature_similarity(a: _Signature, b: _Signature) -> float:
    if not a.words or not b.words:
        return 1.0 if a.words == b.words else 0.0
    # A changed number is a changed fact ("killed 6" / "killed 4"): keep both.
    if a.numbers != b.numbers:
        return 0.0
    # So is a changed name ("Stocks to watch on Monday" / "... on Thursday", "Retrospectives
    # is one way to ..." / "Standup is one way to ...").
    if not _names_agree(a, b):
        return 0.0
    return len(a.words & b.words) / len(a.words | b.words)


#: Two paragraphs whose :func:`block_similarity` reaches this are one paragraph with small
#: edits; the later one is dropped. The score is the Jaccard index of the two paragraphs'
#: word sets after folding case, punctuation, abbreviation dots ("U.S." = "US"), possessives,
#: British/American spelling ("centred" = "centered", "defence" = "defense") and plurals; it
#: is 0 when the paragraphs' numbers differ or their capitalised words overlap less than half.
#:
#: Measured on the sample article (issue 2): the lead paragraph vs its edited repeat
#: (paragraph 5) scores 0.861; the two "joint headquarters" paraphrases (paragraphs 4 and 6)
#: have a word Jaccard of 0.386 (the highest of every other pair) and score 0 with the guards;
#: no other pair scores above 0.19. On the STS 2013-2016 headline pairs (1,643 rated <= 3.5,
#: "not the same"; 306 rated >= 4.6, "near identical"): at 0.7, 0.91% (15) of the different
#: pairs and 18% of the near-identical ones score as repeats; at 0.6 1.8% / 33%, at 0.8
#: 0.24% / 6%. Without the names guard 0.7 gave 1.1% / 31%; word Jaccard alone 1.4% / 33%.
#: Word bigrams, character 5-grams and containment separated the pairs less well at every
#: threshold for the same seed margin.
#: Headlines of about eight words are the hard case (one word moves the score by ~0.1);
#: paragraphs are longer and separate more clearly. We choose 0.7: deleting a paragraph that
#: says something new is worse than keeping a repeat. tests/test_normalise.py re-measures.
NEAR_DUPLICATE_THRESHOLD = 0.7
#: Blocks shorter than this many words are dropped only when exactly equal. Over the 1,179
#: items of the shared real-world feed corpus (11,518 blocks), a minimum of 5 words dropped 47
#: blocks as near repeats, 12 dropped 29; the difference was chart titles, list labels and
#: short lead-ins that differ in the one word that matters ("AMD 9800X3D Single-Core
#: Frequency" / "... All-Core ...", "Here's a test for or:" / "... for and:").
_MIN_WORDS_FOR_NEAR = 12
#: Only prose is compared for near repeats; code (``pre``: 15 of those 29), tables and
#: headings vary by design in small edits, so they are dropped only when exactly repeated.
_PROSE_KINDS = frozenset({"", "text"})


def dedupe_blocks(blocks: Sequence[str], kinds: Sequence[str] | None = None) -> list[bool]:
    """For plain-text blocks in document order, say which to keep (``True``) and which repeat
    an earlier block (``False``): exact repeats (after whitespace and case normalisation)
    always; near repeats (:func:`block_similarity` >= :data:`NEAR_DUPLICATE_THRESHOLD`) when
    both have at least twelve words. The first occurrence is always the one kept. With
    ``kinds`` (one label per block), a block is compared only with blocks of the same kind
    (a section heading that repeats a table-of-contents entry is no repeat), and near
    repeats are looked for only among ``"text"`` blocks (prose), not code or tables.
    """
    return _dedupe(blocks, kinds, collapsed=False)


def _dedupe(blocks: Sequence[str], kinds: Sequence[str] | None, *, collapsed: bool) -> list[bool]:
    """:func:`dedupe_blocks`; ``collapsed``: the blocks' whitespace is collapsed already."""
    if len(blocks) < 2:
        return [True] * len(blocks)  # nothing to repeat
    keep: list[bool] = []
    seen_exact: set[tuple[str, str]] = set()
    kept: list[_Kept] = []
    numbers: list[frozenset[str]] = []  # kept[k].numbers, for the first test in C
    raws: list[frozenset[str]] = []  # kept[k].raw and its size, for the prefilter in C,
    sizes: list[int] = []  # built when a comparison first needs them
    for pos, text in enumerate(blocks):
        kind = kinds[pos] if kinds is not None else ""
        exact = (kind, (text if collapsed else _collapse_ws(text)).lower())
        if not exact[1]:
            keep.append(True)
            continue
        if exact in seen_exact:
            keep.append(False)
            continue
        if kind in _PROSE_KINDS and exact[1].count(" ") + 1 >= _MIN_WORDS_FOR_NEAR:
            block = _Kept(kind, text, exact[1])
            if kept and _repeats_any(block, kept, numbers, raws, sizes):
                keep.append(False)
                continue
            kept.append(block)
            numbers.append(block.numbers)
        seen_exact.add(exact)
        keep.append(True)
    return keep


class _Kept:
    """A prose block under comparison: its numbers at once, its raw lower-case word set and
    its :class:`_Signature` only when a comparison needs them."""

    __slots__ = ("_dashes", "_raw", "_sig", "kind", "lowered", "numbers", "text")

    def __init__(self, kind: str, text: str, lowered: str) -> None:
        self.kind = kind
        self.text = text
        self.lowered = lowered
        self._raw: frozenset[str] | None = None
        self._sig: _Signature | None = None
        self._dashes = "—" in lowered or "–" in lowered
        self.numbers = self._numbers()

    @property
    def raw(self) -> frozenset[str]:
        if self._raw is None:
            self._raw = frozenset(self.lowered.split())
        return self._raw

    def _numbers(self) -> frozenset[str]:
        """``self.sig.numbers`` (the folded words that start with a digit), folding only
        the words that hold an ASCII digit: folding keeps a word's first character, so when
        no other character of the block is a digit these are the only candidates. (A pair
        of paragraphs that differ in their numbers is no repeat: the cheapest test.)"""
        low = self.lowered
        if not low.isascii() and any(map(str.isdigit, "".join(_NON_ASCII(low)))):
            return self.sig.numbers  # e.g. "²" or "٣": str.isdigit, no ASCII digit
        if self._dashes:  # dashes separate words (see _raw_words)
            low = low.replace("—", " ").replace("–", " ")
        held = _DIGIT_WORDS(" " + low)
        if not held:
            return _NO_NUMBERS
        words = frozenset(map(_norm_word, held))
        return frozenset(compress(words, map(_starts_with_digit, words)))

    @property
    def sig(self) -> _Signature:
        if self._sig is None:
            # Without dashes the raw set holds exactly the tokens :func:`_raw_words` gives,
            # so the folded set is computed from the distinct tokens only.
            words = None if self._dashes else frozenset(map(_norm_word, self.raw)) - _NO_WORD
            self._sig = _Signature(self.text, words)
        return self._sig


# The words (each after a space) that hold an ASCII digit; possessive, so no backtracking.
_DIGIT_WORDS = re.compile(r" ([^ 0-9]*+[0-9][^ ]*+)").findall
_NON_ASCII = re.compile(r"[^\x00-\x7f]+").findall
_NO_NUMBERS: frozenset[str] = frozenset()


def _starts_with_digit(word: str) -> bool:
    return word[:1].isdigit()


#: How many earlier paragraphs each one is compared with: bounds the work on a pathological
#: document (thousands of blocks); a real article has far fewer.
_NEAR_WINDOW = 200
#: A pair is scored only when the Jaccard index of the blocks' raw lower-case word sets
#: (split on whitespace, nothing folded) reaches this. Folding cannot lift a pair from here
#: to the threshold: among the pairs scoring >= 0.7, the lowest raw Jaccard was 0.33 (STS
#: headlines) and 0.72 (prose pairs of the real-world corpus), while only 520 of that
#: corpus's 118,027 prose pairs pass 0.2, so tokenising and folding is rarely needed.
_RAW_PREFILTER = 0.2


def _repeats_any(
    block: _Kept,
    kept: list[_Kept],
    numbers: list[frozenset[str]],
    raws: list[frozenset[str]],
    sizes: list[int],
) -> bool:
    """Is ``block`` a near repeat of a kept block? The tests are independent (a pair must
    pass them all), so the cheap ones go first: the numbers (``numbers``: the kept blocks'),
    the raw word sets (``raws``/``sizes``: the kept blocks' raw sets and their sizes, built
    on first need; intersections and the prefilter's arithmetic run in C over the window,
    since nearly every pair fails one of these two), the kind, then the sizes of the folded
    sets (Jaccard >= t needs the smaller to be >= t times the larger), the folded Jaccard;
    the names guard only for a pair that passed them all."""
    t = NEAR_DUPLICATE_THRESHOLD
    start = max(0, len(kept) - _NEAR_WINDOW)
    same = list(compress(range(start, len(kept)), map(block.numbers.__eq__, numbers[start:])))
    if not same:
        return False
    while len(raws) < len(kept):  # each kept block's raw set once
        other_raw = kept[len(raws)].raw
        raws.append(other_raw)
        sizes.append(len(other_raw))
    raw = block.raw
    rsize = len(raw)
    inters = list(map(len, map(raw.intersection, map(raws.__getitem__, same))))
    # the raw Jaccard prefilter, pair by pair: inter >= p * (|a| + |b| - inter)
    limits = map(
        _RAW_PREFILTER.__mul__,
        map(operator.sub, map(rsize.__add__, map(sizes.__getitem__, same)), inters),
    )
    for k in compress(same, map(operator.ge, inters, limits)):
        other = kept[k]
        if other.kind != block.kind:
            continue
        sig, osig = block.sig, other.sig
        size, osize = len(sig.words), len(osig.words)
        if min(size, osize) < _MIN_WORDS_FOR_NEAR or min(size, osize) < t * max(size, osize):
            continue
        inter = len(sig.words & osig.words)
        if inter >= t * (size + osize - inter) and _names_agree(sig, osig):
            return True
    return False


def _names_agree(a: _Signature, b: _Signature) -> bool:
    return a.names == b.names or 2 * len(a.names & b.names) >= len(a.names | b.names)


def _unit_kind(tag: str) -> str:
    if tag in _HEADING_TAGS:
        return "heading"
    if tag in ("pre", "table"):
        return tag
    return "text"


def _dedupe_html(fragment: str) -> tuple[str, list[tuple[str, str]]]:
    """Remove repeated units from sanitised HTML; return the HTML and the kept units as
    (tag, plain text) in order."""
    pieces = _split_pieces(fragment)
    units = [i for i, p in enumerate(pieces) if p.unit]
    texts = _sanitised_texts([pieces[i].html for i in units])
    kinds = [_unit_kind(pieces[i].tag) for i in units]
    keep_flags = _dedupe(texts, kinds, collapsed=True)  # _sanitised_text collapses
    dropped = {i for i, k in zip(units, keep_flags, strict=True) if not k}
    kept_units = [
        (pieces[i].tag, t) for i, t, k in zip(units, texts, keep_flags, strict=True) if k and t
    ]
    if not dropped:
        return fragment, kept_units
    # A list whose every item was dropped goes too.
    live_containers = {
        p.container
        for i, p in enumerate(pieces)
        if p.unit and p.container >= 0 and i not in dropped
    }
    emptied = {p.container for p in pieces if p.unit and p.container >= 0} - live_containers
    out = []
    for i, p in enumerate(pieces):
        if i in dropped:
            continue
        # the container's opening tag is the piece its items point to; the rest point to it
        owner = i if i in emptied else p.container
        if owner in emptied:
            continue
        out.append(p.html)
    return "".join(out), kept_units


# --- words, stems, keywords ---------------------------------------------------------------------


#: Function words and news boilerplate: never keywords, never an entity on their own.
STOPWORDS: frozenset[str] = _words(
    """a about above after again against ago ahead all almost along already also although always
    am among an and another any anyone anything are around as at away back be became because
    become been before being below between both but by can could did do does doing done down
    during each either else even ever every few for from further get gets got had has have having
    he her here hers herself him himself his how however i if in into is it its itself just last
    least less like made make many may me meanwhile might more most much must my myself near
    nearly neither never new next no nor not now of off often on once one only or other others
    our ours ourselves out over own per perhaps rather said same say says see seen several she
    should since so some still such than that the their theirs them themselves then there these
    they this those though through thus to too toward towards under until up upon us very via
    was we well were what whatever when where whether which while who whom whose why will with
    within without would yet you your yours yourself yourselves also amid amidst according
    told tell week year years day days today yesterday tomorrow time times including include
    includes new first second third two three four five six seven eight nine ten"""
)

# Words that open sentences in news copy and are not names (besides the stopwords).
_COMMON_CAPITALISED = _words(
    """officials official police authorities experts residents analysts critics sources
    witnesses lawmakers investigators researchers scientists reports report people many some
    both neither after before during while despite although though according this that these
    those it its there here what when where why how who whom which his her their our my your
    we they he she you i if as at in on by for from with to of and but or nor so yet the a an
    meanwhile however moreover furthermore also still then now today yesterday tomorrow earlier
    later finally instead overall separately elsewhere additionally indeed thus hence
    breaking update updated exclusive watch video photo photos read more click"""
)


# Words that end in "s" without being plurals.
_STEM_KEEP = _words(
    """news series species means lens chaos atlas bias canvas alias texas kansas arkansas
    christmas athens wales always perhaps whereas"""
)


def stem(word: str) -> str:
    """A light, predictable stemmer for lower-case English words: plural and possessive
    endings only (``ies`` -> ``y``, ``sses`` -> ``ss``, ``s`` -> ``""``), so stems stay
    readable in a match's reasons."""
    if len(word) <= 3 or not word.isalpha() or word in _STEM_KEEP:
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("sses"):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is", "ous", "ics")):
        return word[:-1]
    return word


def _keyword_word(raw: str) -> str:
    """A token's keyword form, or "" when it is no keyword (a stopword, a number, one letter)."""
    word = _bare_word(raw)
    if len(word) < 2 or word in STOPWORDS or word.isdigit():
        return ""
    return _norm_word(word)


def extract_keywords(text: str, k: int = 20, *, title: str = "") -> tuple[str, ...]:
    """The ``k`` most frequent content words of ``title`` + ``text`` (lower case, stopwords
    removed, British spelling folded to American, plurals stemmed). Title words count three
    times: a headline names what the story is about. Ties keep first-appearance order."""
    # map/filter/Counter iterate in C, and _keyword_word is memoised (a dict read by
    # subscript, faster than an lru_cache call): no Python-level loop.
    form = _KEYWORD_WORDS.__getitem__
    counts: Counter[str] = Counter()
    if title:
        counts.update(filter(None, map(form, _raw_words(title) * 3)))
    counts.update(filter(None, map(form, _raw_words(text))))
    # A stable sort (as Counter.most_common, whose heap for k is slower here): for equal
    # counts the first appearance wins.
    best = sorted(counts.items(), key=_SECOND, reverse=True)[: max(k, 0)]
    return tuple(map(_FIRST, best))


# A memo, not state: see _Memo.
_KEYWORD_WORDS = _Memo(_keyword_word, 1 << 16)


_FIRST = operator.itemgetter(0)
_SECOND = operator.itemgetter(1)


# --- entities -----------------------------------------------------------------------------------

#: One key per thing: the spelled-out, dotted and undotted forms of common names.
ENTITY_ALIASES: dict[str, str] = {
    "US": "U.S.", "U.S.A.": "U.S.", "USA": "U.S.", "United States": "U.S.",
    "United States of America": "U.S.", "America": "U.S.",
    "UK": "U.K.", "United Kingdom": "U.K.", "Britain": "U.K.", "Great Britain": "U.K.",
    "UN": "U.N.", "United Nations": "U.N.",
    "E.U.": "EU", "European Union": "EU",
    "Washington DC": "Washington", "Washington D.C.": "Washington",
}  # fmt: skip

# Titles and roles: they break a name sequence and are not entities themselves
# ("U.S. Secretary of Defense Lloyd Austin" -> "U.S.", "Lloyd Austin").
_ROLE_WORDS = _words(
    """secretary minister president premier chancellor governor senator representative rep
    sen gov mayor ambassador envoy spokesman spokeswoman spokesperson director attorney
    gen lt col maj capt sgt admiral adm colonel captain commander lieutenant sergeant king
    queen prince princess pope bishop archbishop cardinal mr mrs ms dr prof professor judge
    officer ceo cfo chairman chairwoman chair leader"""
)
# Words that are part of a role only next to one ("Defense Minister", "Attorney General",
# "Vice President") and part of a name otherwise ("Islamic State", "General Motors").
_ROLE_QUALIFIERS = _words(
    """vice prime deputy acting former interim senior chief general foreign defense defence
    state interior finance economy trade health justice education home environment energy
    agriculture labor labour transport"""
)
_NAME_CONNECTORS = _words("of de da del della van von der den la le al el bin ibn du des")
_MONTHS = {
    m: i
    for i, ms in enumerate(
        ["jan january", "feb february", "mar march", "apr april", "may", "jun june",
         "jul july", "aug august", "sep sept september", "oct october", "nov november",
         "dec december"], start=1,
    )
    for m in ms.split()
}  # fmt: skip
_MONTH_NAMES = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
_WEEKDAYS = _words("monday tuesday wednesday thursday friday saturday sunday")
_UNITS = {
    "million": "million", "billion": "billion", "trillion": "trillion", "bn": "billion",
    "km": "km", "kilometres": "km", "kilometers": "km", "miles": "miles", "mph": "mph",
    "kg": "kg", "tonnes": "tonnes", "tons": "tons", "people": "people", "dead": "dead",
    "killed": "killed", "years": "years", "year": "years", "magnitude": "magnitude",
    "points": "points", "degrees": "degrees", "feet": "feet", "metres": "m", "meters": "m",
    "seconds": "seconds", "minutes": "minutes", "hours": "hours", "days": "days",
    "weeks": "weeks", "months": "months",
}  # fmt: skip
_CURRENCY = {"$": "$", "€": "€", "£": "£", "¥": "¥", "US$": "$"}

_OPENERS = "\"“”‘’'([{«"
_RUN_BREAKERS = frozenset(",;:)]\"”’'!?»—–…")
_ABBREVIATIONS = _words("mr. mrs. ms. dr. st. gen. sen. rep. gov. lt. col. capt. prof. jr. sr. vs.")
_NUM_TOKEN_RE = re.compile(
    r"(US\$|[$€£¥])?((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)(%|st|nd|rd|th|[a-zA-Z]+)?"
)
_MULTIPLIERS = {"million": "million", "billion": "billion", "trillion": "trillion",
                "bn": "billion", "m": "million"}  # fmt: skip


# Sizes of the entity scanner's memos (entries): the frequent tokens of news prose fit; all
# of them full take about 10 MB (tracemalloc), a bound that matters with thousands of
# sources. Cheap per-token tests are not memoised: on the real-world feeds' large vocabulary
# a memo that misses costs more than the test (measured; so are numbers and dates).
_TOKEN_MEMO = 1 << 14
_WINDOW_MEMO = 1 << 12


def _core(word: str) -> str:
    """A whitespace token without surrounding punctuation and possessive: "China’s," -> "China",
    "U.S.," -> "U.S."."""
    core = word.strip(_STRIP)
    if core and "." in word:
        after = len(word) - len(word.lstrip(_STRIP)) + len(core)
        if word[after : after + 1] == "." and _is_abbreviation(core + "."):
            core += "."  # the dot was the abbreviation's own
    if core.endswith(("’s", "'s")):
        core = core[:-2]
    return core


def _is_abbreviation(word: str) -> bool:
    """ "U.S.", "J.", "Mr." end with a dot that rarely ends a sentence."""
    if len(word) > 4 and word.count(".") == 1:  # "Tokyo." (the common case)
        return word.lower() in _ABBREVIATIONS
    if word.lower() in _ABBREVIATIONS:
        return True
    letters = word.split(".")
    return len(letters) >= 2 and all(len(x) == 1 and x.isalpha() for x in letters[:-1])


def _ends_run(word: str) -> bool:
    last = word[-1]
    if last in _RUN_BREAKERS:
        return True
    return last == "." and not _is_abbreviation(word.lstrip(_OPENERS))


# The last characters a token that ends a sentence can have: a token ending otherwise (nearly
# every token) does not end one, which the scanner tests before calling _ends_sentence.
_SENTENCE_TAILS = frozenset("\"”’')»!?:.")


# A memo, not state: asked only of tokens ending in sentence punctuation, before every
# capitalised word that follows one (the same sentence-final words recur across items).
def _ends_sentence(word: str) -> bool:
    last = word.rstrip("\"”’')»")[-1:]
    return last in ("!", "?", ":") or (last == "." and not _is_abbreviation(word.strip("\"”’')»")))


def _year(word: str) -> str | None:
    core = word.strip(_STRIP)
    if len(core) == 4 and core.isdigit() and core[:2] in ("19", "20"):
        return core
    return None


def extract_entities(text: str) -> tuple[str, ...]:
    """Named things in ``text`` by rule, most frequent first (ties: first appearance).

    * capitalised name sequences, joined over "of"/"de"/"van"... ("Bank of Japan"), split at
      titles and roles, which are dropped ("Defense Minister Yasukazu Hamada" ->
      "Yasukazu Hamada"); a word that opens a sentence alone ("Buses will ...") only when it
      also appears as a name elsewhere, is no common word and never appears in lower case;
      a lone surname after the full name counts as the full name;
    * acronyms ("NATO", "U.S."), with :data:`ENTITY_ALIASES` folding "US"/"United States";
    * numbers with units, percentages and money ("6.1 magnitude", "12%", "$1.5 billion"),
      and bare numbers of two digits or more (years included);
    * dates: "March 3", "March 3, 2024" (also from "3 March 2024"), "March 2024", weekdays.

    Each line is scanned on its own (a name never runs across a line break). A line in
    capitals only (a shouted headline) yields only numbers and dates.

    A loop over whitespace tokens that looks twice only at tokens starting with a capital,
    a digit or a currency sign: about four times faster here than one regular expression
    with an alternative per kind.
    """
    found: list[str] = []
    lines = text.splitlines()
    split = [line.split() for line in lines]
    scan = _EntityScan(text, split)
    for line, words in zip(lines, split, strict=True):
        if words:
            scan.line(words, found, shouting=len(words) >= 4 and line.isupper())

    # A lone capitalised word opening a sentence ("Buses will ...") counts only when the same
    # word also shows up as a name where capitals are not automatic.
    if scan.pending:  # (the scan notes each pending entry it adds)
        pending = scan.pending
        confirmed = set(found) - pending
        # each pending entry -> its name, or None when unconfirmed (the map runs in C)
        fate = {e: e[1:] if e[1:] in confirmed else None for e in pending}
        found = [e for e in map(fate.get, found, found) if e is not None]

    # "Hamada" after "Yasukazu Hamada": the surname alone is the same person
    # (each distinct entity once: the outcome does not depend on repeats or order)
    counts = Counter(found)  # keys in order of first appearance
    lasts = list(map(_SURNAMES.__getitem__, counts))
    surnames: dict[str, str | None] = {}
    for e, last in zip(compress(counts, lasts), filter(None, lasts), strict=True):
        prev = surnames.get(last, e)
        surnames[last] = e if prev == e else None
    # Only a one-word entity equal to a surname changes (a surname holds no space); when none
    # is among the entities, the counts stand.
    full = {last: e for last, e in surnames.items() if e}
    if full and not full.keys().isdisjoint(counts):
        counts = Counter(map(full.get, found, found))
    # sorted is stable (as most_common): equal counts keep the order of first appearance
    return tuple(map(_FIRST, sorted(counts.items(), key=_SECOND, reverse=True)))


_PENDING = "\x00"  # marks a sentence-initial one-word candidate until it is confirmed
_SUBSTRING_SEARCHES = 8  # per text, before the token set is built instead (see below)


def _surname(entity: str) -> str:
    """The last word of a name of several words, which the word alone may stand for; ""
    for anything else (one word, "69 million", "March 3")."""
    if " " not in entity:
        return ""
    parts = entity.split()
    if len(parts) >= 2 and parts[-1][:1].isupper() and parts[0] not in _MONTH_NAMES:
        return parts[-1]
    return ""


# A memo, not state (see _Memo); entities recur across items.
_SURNAMES = _Memo(_surname, 1 << 15)


class _EntityScan:
    """The per-call state of :func:`extract_entities`."""

    __slots__ = ("_searches", "_tokens", "lines", "pending", "text")

    def __init__(self, text: str, lines: list[list[str]]) -> None:
        self.text = text
        self.lines = lines  # the text's lines split into words (together: text.split())
        self.pending: set[str] = set()  # the entries added with the _PENDING mark
        self._tokens: frozenset[str] | None = None
        self._searches = 0

    def appears_in_lower_case(self, word: str) -> bool:
        """Does ``word`` (lower case) occur in the text in lower case? Asked only for
        sentence-initial one-word candidates; the token set is built once, on first use."""
        tokens = self._tokens
        if tokens is None:
            # A substring search in C often settles it, but only a few times: each scans the
            # whole text, and one per sentence made a 1 MB paragraph of "Japan ... ."
            # sentences cost 24 s of CPU (quadratic; found by fuzzing hostile items).
            self._searches += 1
            if self._searches <= _SUBSTRING_SEARCHES and word not in self.text:
                return False
            # the words split already (their hashes are computed): the same set as
            # frozenset(text.split()), since every line break is whitespace to split()
            tokens = self._tokens = frozenset(chain.from_iterable(self.lines))
        return (
            word in tokens
            or word + "," in tokens
            or word + "." in tokens
            or word + ";" in tokens
            or word + ":" in tokens
            or word + ")" in tokens
        )

    def line(self, words: list[str], found: list[str], *, shouting: bool) -> None:
        n = len(words)
        # Most words start in lower case and are no entity: one comprehension finds the
        # others, so the loop below runs only over capitals, digits and currency signs.
        # (compress/map iterate in C: several times faster than a comprehension)
        candidates = compress(range(n), map(operator.not_, map(str.islower, map(_FIRST, words))))
        resume = 0  # words before this index were consumed by a date, number or name run
        kinds, tails, ends_sentence = _TOKEN_KINDS, _SENTENCE_TAILS, _ENDS_SENTENCE
        connectors, inside, add = _NAME_CONNECTORS, _NAMES_INSIDE, found.append
        for i in candidates:
            if i < resume:
                continue
            core, low, kind, ended = kinds[words[i]]
            if kind == _K_NAME:
                pass
            elif kind == _K_NUMBER:
                got, used = _number_here(*words[i : i + 3])
                found.extend(got)
                resume = i + used
                continue
            elif kind == _K_WEEKDAY:
                found.append(low.capitalize())
                continue
            elif kind == _K_MONTH:
                j = _date(words, i, low, found)
                if j > i:
                    resume = j
                    continue
            else:
                continue
            j = i + 1
            if ended or j == n or not (words[j][0].isupper() or words[j] in connectors):
                # a run of one word (the common case; the loop below would stop at once;
                # resume stays: the next candidate comes after this word anyway)
                if shouting:
                    continue
                if not i or ((prev := words[i - 1])[-1] in tails and ends_sentence[prev]):
                    # a sentence's first word is also dropped when it appears in lower
                    # case in the text (the one rule that needs the text)
                    name = _NAMES_AT_START[core]
                    if name and not self.appears_in_lower_case(low):
                        found.append(name)
                        if name[0] == _PENDING:
                            self.pending.add(name)
                    continue
                name = inside[core]
                if name:
                    add(name)
                continue
            # a capitalised run
            run = [core]
            while j < n and not ended:
                nxt = words[j]
                if not nxt[0].isupper():  # (_run_word would say so; most runs end here)
                    if (
                        nxt in _NAME_CONNECTORS
                        and j + 1 < n
                        and words[j + 1][:1].isupper()
                        and not _ends_run(nxt)
                    ):
                        run.append(nxt)
                        j += 1
                        continue
                    break
                c, ended = _RUN_WORDS[nxt]
                if not c:
                    break
                run.append(c)
                j += 1
            resume = j
            if shouting:
                continue
            if i:
                prev = words[i - 1]
                sentence_start = prev[-1] in _SENTENCE_TAILS and _ENDS_SENTENCE[prev]
            else:
                sentence_start = True
            if len(run) > 1:
                found.extend(_run_names(tuple(run), sentence_start))
                continue
            # the common case, one word: a sentence's first word is also dropped when it
            # appears in lower case in the text (the one rule that needs the text)
            if sentence_start:
                name = _NAMES_AT_START[core]
                if name and not self.appears_in_lower_case(low):
                    found.append(name)
                    if name[0] == _PENDING:
                        self.pending.add(name)
            else:
                name = _NAMES_INSIDE[core]
                if name:
                    found.append(name)


def _date(words: Sequence[str], i: int, month: str, found: list[str]) -> int:
    """A date starting with a month name at ``words[i]``; returns the next index (``i``
    when this is no date, e.g. "May" the name)."""
    name = _MONTH_NAMES[_MONTHS[month] - 1]
    n = len(words)
    if i + 1 < n and not _ends_run(words[i]):
        nxt = words[i + 1]
        day = nxt.strip(_STRIP)
        for suffix in ("st", "nd", "rd", "th"):
            day = day.removesuffix(suffix)
        if day.isdigit() and 1 <= int(day) <= 31 and len(day) <= 2:
            year = _year(words[i + 2]) if i + 2 < n and nxt.endswith(",") else None
            if year is None and i + 2 < n and not _ends_run(nxt):
                year = _year(words[i + 2])
            found.append(f"{name} {int(day)}" + (f", {year}" if year else ""))
            return i + 3 if year else i + 2
        year = _year(nxt)
        if year:
            found.append(f"{name} {year}")
            return i + 2
    if month != "may" and len(month) > 3:
        found.append(name)
        return i + 1
    return i


def _number(words: Sequence[str], i: int, core: str, found: list[str]) -> int:
    m = _NUM_TOKEN_RE.fullmatch(core)
    if m is None:  # "3D", "2024-25", "F-16": not a number we read
        return i + 1
    currency, number, suffix = m.group(1), m.group(2).replace(",", ""), m.group(3)
    n = len(words)
    nxt_core = ""
    if i + 1 < n and not _ends_run(words[i]):
        nxt_core = words[i + 1].strip(_STRIP)
    nxt = nxt_core.lower()
    if currency:
        mult = _MULTIPLIERS.get((suffix or "").lower())
        used = 1
        if mult is None and nxt in _MULTIPLIERS:
            mult, used = _MULTIPLIERS[nxt], 2
        found.append(f"{_CURRENCY[currency]}{number}" + (f" {mult}" if mult else ""))
        return i + used
    if suffix == "%":
        found.append(f"{number}%")
        return i + 1
    if suffix:
        unit = _UNITS.get(suffix.lower())
        if unit:
            found.append(f"{number} {unit}")
        elif suffix.lower() in ("st", "nd", "rd", "th") and nxt.rstrip(".") in _MONTHS:
            return _day_month(words, i, number, nxt.rstrip("."), found)
        return i + 1
    if nxt in ("percent", "pc") or (
        nxt == "per" and i + 2 < n and words[i + 2].strip(_STRIP).lower() == "cent"
    ):
        found.append(f"{number}%")
        return i + (3 if nxt == "per" else 2)
    if nxt in _UNITS:
        found.append(f"{number} {_UNITS[nxt]}")
        return i + 2
    if nxt_core[:1].isupper() and nxt.rstrip(".") in _MONTHS and number.isdigit():
        return _day_month(words, i, number, nxt.rstrip("."), found)
    if len(number.replace(".", "")) >= 2:  # single digits say too little
        found.append(number)
    return i + 1


def _day_month(words: Sequence[str], i: int, day: str, month: str, found: list[str]) -> int:
    """ "3 March", "3 March 2024" -> "March 3", "March 3, 2024"."""
    name = _MONTH_NAMES[_MONTHS[month] - 1]
    if not day.isdigit() or not 1 <= int(day) <= 31:
        found.append(name)
        return i + 2
    year = None
    if i + 2 < len(words) and not _ends_run(words[i + 1]):
        year = _year(words[i + 2])
    found.append(f"{name} {int(day)}" + (f", {year}" if year else ""))
    return i + 3 if year else i + 2


_K_SKIP, _K_NUMBER, _K_NAME, _K_WEEKDAY, _K_MONTH = range(5)


# Memos, not state: pure functions of one token, asked for the same tokens again and again.
def _token_kind(word: str) -> tuple[str, str, int, bool]:
    """What a whitespace token may start for :meth:`_EntityScan.line`: (its core, its lower
    case without a final dot, its kind, whether a capitalised run ends with it)."""
    core = _core(word)
    if not core:
        return core, "", _K_SKIP, True
    first = core[0]
    if first.isdigit() or first in "$€£¥" or core.startswith("US$"):
        return core, "", _K_NUMBER, True
    if not first.isupper():
        return core, "", _K_SKIP, True
    low = core.lower().rstrip(".")
    if low in _WEEKDAYS:
        return core, low, _K_WEEKDAY, True
    if low in _MONTHS:
        return core, low, _K_MONTH, _ends_run(word)
    return core, low, _K_NAME, _ends_run(word)


def _single_name_at_start(tok: str) -> str:
    """:func:`_single_name` of a name run's only word, opening a sentence (one argument:
    a cheaper memo key)."""
    return _single_name(tok, tok.lower().rstrip("."), True)


def _single_name_inside(tok: str) -> str:
    """:func:`_single_name` of a name run's only word inside a sentence."""
    return _single_name(tok, tok.lower().rstrip("."), False)


@functools.lru_cache(maxsize=_TOKEN_MEMO)
def _number_here(*words: str) -> tuple[tuple[str, ...], int]:
    """(entities, words used) of the number at ``words[0]``; :func:`_number` reads at most
    the two words after it, so they (a memo key) decide the outcome."""
    found: list[str] = []
    used = _number(words, 0, _TOKEN_KINDS[words[0]][0], found)
    return tuple(found), used


def _single_name(tok: str, low: str, sentence_start: bool) -> str:
    """:func:`_run_names` of a run of one word (``low``: its lower case without a final dot),
    "" for none; the caller adds the rule that needs the text (see :meth:`_EntityScan.line`)."""
    if sentence_start and (low in STOPWORDS or low in _COMMON_CAPITALISED):
        return ""
    acronym = _is_acronym(tok)
    if not acronym and (low in STOPWORDS or low in _ROLE_WORDS):
        return ""
    if len(tok) < 2:
        return ""
    name = ENTITY_ALIASES.get(tok, tok)
    return _PENDING + name if sentence_start and not acronym else name


def _run_word(word: str) -> tuple[str, bool]:
    """The core of a token that continues a capitalised run ("" when the run ends before
    it) and whether the run ends with it."""
    if not word[:1].isupper():
        return "", True
    c = _core(word)
    if not c or c.lower().rstrip(".") in _MONTHS or c.lower() in _WEEKDAYS:
        return "", True
    return c, _ends_run(word)


# Memos, not state: each is a bounded pure function of one token (see _Memo). Plain dicts
# read by subscript: cheaper than lru_cache calls, whose recency bookkeeping also touches
# more memory on every hit.
_TOKEN_KINDS = _Memo(_token_kind, _TOKEN_MEMO)
_RUN_WORDS = _Memo(_run_word, _TOKEN_MEMO)
_ENDS_SENTENCE = _Memo(_ends_sentence, _TOKEN_MEMO)
_NAMES_AT_START = _Memo(_single_name_at_start, _TOKEN_MEMO)
_NAMES_INSIDE = _Memo(_single_name_inside, _TOKEN_MEMO)


@functools.lru_cache(maxsize=_WINDOW_MEMO)
def _run_names(run: tuple[str, ...], sentence_start: bool) -> tuple[str, ...]:
    """Names in one capitalised run: split at roles and titles (dropped, together with an
    "of <Portfolio>" after them) and at capitalised function words ("... the U.S. The
    talks"); a sentence's first word is dropped when it is a common word. For runs of two
    words or more: a run of one (:meth:`_EntityScan._single_name`) also needs the text. A
    pure function of its arguments, so memoised: the same names recur across items."""
    out: list[str] = []
    segment: list[str] = []

    def close() -> None:
        while segment and segment[-1] in _NAME_CONNECTORS:
            segment.pop()
        if segment:
            out.append(ENTITY_ALIASES.get(" ".join(segment), " ".join(segment)))
        segment.clear()

    lows = [t.lower().rstrip(".") for t in run]
    k = 0
    while k < len(run):
        tok = run[k]
        low = lows[k]
        k += 1
        if tok in _NAME_CONNECTORS:
            if segment:
                segment.append(tok)
            continue
        if k == 1 and sentence_start and (low in STOPWORDS or low in _COMMON_CAPITALISED):
            continue
        acronym = _is_acronym(tok)
        if low in STOPWORDS and not acronym:
            close()
            continue
        if not acronym and (
            low in _ROLE_WORDS or (low in _ROLE_QUALIFIERS and _next_to_role(lows, k - 1))
        ):
            close()
            if k < len(run) and run[k] in ("of", "for"):
                k += 2  # "Secretary of Defense": the portfolio goes with the role
            continue
        if len(tok) < 2:
            close()
            continue
        if k == 1 and sentence_start and len(run) == 1 and not acronym:
            out.append(_PENDING + ENTITY_ALIASES.get(tok, tok))
            continue
        segment.append(tok)
    close()
    return tuple(out)


def _next_to_role(lows: list[str], k: int) -> bool:
    """Is the qualifier at ``lows[k]`` part of a role: next to a role word, possibly across
    other qualifiers ("Deputy Foreign Minister", "Attorney General")?"""
    j = k + 1
    while j < len(lows) and lows[j] in _ROLE_QUALIFIERS:
        j += 1
    if j < len(lows) and lows[j] in _ROLE_WORDS:
        return True
    j = k - 1
    while j >= 0 and lows[j] in _ROLE_QUALIFIERS:
        j -= 1
    return j >= 0 and lows[j] in _ROLE_WORDS


def _is_acronym(word: str) -> bool:
    letters = word.replace(".", "").replace("&", "")
    return len(letters) >= 2 and letters.isupper() and letters.isalpha()


# --- ids, links, dates --------------------------------------------------------------------------


def _is_http_url(url: str) -> bool:
    """True for an absolute http(s) URL that parses, port included (nh3 refuses a base URL
    with a bad port, and one broken item must not fail its whole feed)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0-65535
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def canonical_link(link: str | None, base: str | None = None) -> str | None:
    """``link`` made absolute against ``base``, fragment dropped, scheme and host lower-cased;
    ``None`` unless the result is an http(s) URL."""
    if not link or not link.strip():
        return None
    link = link.strip()
    parts = None
    if link[:8].lower().startswith(("http://", "https://")) and ";" not in link:
        # An absolute http(s) link with a host (nearly every feed item's) comes out of
        # urljoin as it went in, up to splitting and joining again, which changes nothing
        # we keep (urljoin drops an empty ";" parameter, hence the test): skip its parses.
        try:
            parts = urlsplit(link)
        except ValueError:
            parts = None  # and the general path below gives None
        if parts is not None and not (parts.scheme in ("http", "https") and parts.netloc):
            parts = None
    if parts is None:
        try:
            if base:
                link = urljoin(base.strip(), link)
            parts = urlsplit(link)
        except ValueError:  # e.g. an invalid IPv6 literal ("http://example.c[o.test/")
            return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    try:
        parts.port  # noqa: B018 - a port outside 0-65535 or not a number: not a usable link
    except ValueError:
        return None
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/",
                       parts.query, ""))  # fmt: skip


def story_slug(path: str) -> str:
    """A URL-safe slug for a story file's relative path: the extension dropped, folders kept
    as ``/``, each part of ``[a-z0-9_-]`` only.

    Plain lower-case names keep their stem (``"2024/japan-us.txt"`` -> ``"2024/japan-us"``).
    Any other path is folded (case, spaces, other characters) and so could collide with
    another file's slug (``"a b.txt"`` and ``"a-b.txt"``): it gets a short hash of the whole
    path (``"Drafts/My Story.txt"`` -> ``"drafts/my-story-<8 hex>"``). The one collision
    left, ``"a.txt"`` beside ``"a.md"``, is refused by the folder scan.
    """
    rel = path.strip().replace("\\", "/")
    stem_path = _EXTENSION.sub("", rel)
    if _PLAIN_SLUG.fullmatch(stem_path) and rel[len(stem_path) :].islower():
        return stem_path
    parts = (_NOT_SLUG.sub("-", part.lower()).strip("-") for part in stem_path.split("/"))
    slug = "/".join(part for part in parts if part) or "story"
    digest = hashlib.sha256(rel.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{slug}-{digest}"


_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,8}$")
_PLAIN_SLUG = re.compile(r"[a-z0-9]+(?:[-_][a-z0-9]+)*(?:/[a-z0-9]+(?:[-_][a-z0-9]+)*)*")
_NOT_SLUG = re.compile(r"[^a-z0-9_]+")


def stable_id(item: RawItem, *, source: str) -> str:
    """The entry id: the item's own id; else a uuid5 of its canonical link, of
    ``source/path`` for a story, or of source + title + published. Deterministic."""
    if item.id and item.id.strip():
        return item.id.strip()
    link = canonical_link(item.link, item.base)
    if link:
        key = link
    elif item.path:
        key = f"{source}/{item.path}"
    else:
        published = _as_utc(item.published or item.updated)
        key = "\x1f".join(
            (source, _collapse_ws(item.title or ""), published.isoformat() if published else "")
        )
    return "urn:uuid:" + str(uuid.uuid5(ID_NAMESPACE, key))


def _as_utc(value: datetime | None) -> datetime | None:
    """Aware UTC. A naive datetime from a parser is taken as UTC: feed formats require a zone
    (RFC 3339 for Atom, RFC 822 for RSS) and feedparser reports times in UTC."""
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def content_hash(
    *, title: str, link: str | None, content_html: str, author: str | None, tags: Sequence[str]
) -> str:
    """sha256 (hex) over what a reader sees, serialised unambiguously (JSON array)."""
    payload = _JSON_ENCODE([title, link or "", content_html, author or "", list(tags)])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# What json.dumps(..., ensure_ascii=False, separators=(",", ":")) builds on every call.
_JSON_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


# --- summary and title --------------------------------------------------------------------------


def _shorten(text: str, limit: int) -> str:
    """``text`` if it fits, else cut at the last word boundary before ``limit`` plus "…"."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]  # leave room for the ellipsis
    space = cut.rfind(" ")
    if space > limit // 3:
        cut = cut[:space]
    return cut.rstrip(" ,;:-–—") + "…"


def _lead_text(units: Sequence[tuple[str, str]]) -> str:
    for tag, text in units:
        if text and tag not in _HEADING_TAGS:
            return text
    return next((text for _, text in units if text), "")


# --- the entry point ----------------------------------------------------------------------------


def normalise_item(
    item: RawItem,
    *,
    source: str,
    now: datetime,
    permalink_base: str | None = None,
    analyse: bool = True,
) -> Entry:
    """Turn one parsed item into a clean :class:`Entry`.

    ``now`` must be timezone-aware (it becomes ``published`` of an undated item); a naive
    ``now`` raises :class:`ValueError`, a programming error. ``permalink_base`` (the daemon's
    story URL prefix, ending in "/") gives story items (``item.path`` set) the link
    ``permalink_base + story_slug(path) + ".html"``. ``analyse=False`` skips
    :func:`extract_entities` / :func:`extract_keywords` (about half the cost) for callers that
    have no watches to feed. Never raises on item content: whatever the item holds, some entry
    comes out.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("normalise_item: 'now' must be timezone-aware")
    now = now.astimezone(UTC)

    # dates
    published = _as_utc(item.published) or _as_utc(item.updated)
    dated = published is not None
    if published is None:
        published = now
    updated = max(_as_utc(item.updated) or published, published)

    # link
    link: str | None
    if item.path and permalink_base:
        link = permalink_base + story_slug(item.path) + ".html"
        link = canonical_link(link) or link
    else:
        link = canonical_link(item.link, item.base)

    # content
    if item.content_html and item.content_html.strip():
        raw_html = item.content_html
    elif item.summary_html and item.summary_html.strip():
        raw_html = item.summary_html
    elif item.content_text and item.content_text.strip():
        raw_html = _text_to_html(item.content_text)
    else:
        raw_html = ""
    base = item.base if item.base and _is_http_url(item.base) else link
    clean = sanitise_html(raw_html, base=base).strip() if raw_html else ""
    clean, units = _dedupe_html(clean)
    clean = clean.strip()

    # summary: the item's own short plain summary when it also has full content, else the
    # lead paragraph of the (deduplicated) content
    summary = ""
    if item.summary_html and item.content_html and item.content_html.strip():
        own = html_to_text(item.summary_html)
        if own and len(own) <= SUMMARY_MAX_CHARS:
            summary = own
    if not summary:
        summary = _shorten(_lead_text(units), SUMMARY_MAX_CHARS)

    title = html_to_text(item.title or "")
    if not title:
        title = _shorten(summary, _TITLE_FROM_SUMMARY_CHARS) if summary else _UNTITLED

    author = html_to_text(item.author) if item.author else ""
    tags = tuple(dict.fromkeys(t for t in (_collapse_ws(t) for t in item.tags) if t))

    entities: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    if analyse:
        body_text = "\n".join(text for _, text in units)  # one line per block: see extract_entities
        entities = extract_entities(body_text if _is_title_case(title) else f"{title}\n{body_text}")
        keywords = extract_keywords(body_text, title=title)

    return Entry(
        id=stable_id(item, source=source),
        source=source,
        title=title,
        link=link,
        published=published,
        updated=updated,
        summary=summary,
        content_html=clean,
        content_hash=content_hash(
            title=title, link=link, content_html=clean, author=author or None, tags=tags
        ),
        dated=dated,
        author=author or None,
        tags=tags,
        entities=entities,
        keywords=keywords,
        story_path=item.path,
    )


def _is_title_case(title: str) -> bool:
    """Headline Style Capitalises Every Word, which would make every word look like a name."""
    words = [w for w in re.findall(r"[A-Za-z][A-Za-z'’-]*", title) if w.lower() not in STOPWORDS]
    if len(words) < 3:
        return False
    return sum(1 for w in words if w[0].isupper()) / len(words) > 0.7


def normalise_items(
    items: Iterable[RawItem],
    *,
    source: str,
    now: datetime,
    permalink_base: str | None = None,
    analyse: bool = True,
) -> list[Entry]:
    """:func:`normalise_item` over a batch, dropping later items whose id repeats an earlier
    one (readers such as newsboat drop or mix up entries with duplicate ids)."""
    seen: set[str] = set()
    out: list[Entry] = []
    for item in items:
        entry = normalise_item(
            item, source=source, now=now, permalink_base=permalink_base, analyse=analyse
        )
        if entry.id in seen:
            continue
        seen.add(entry.id)
        out.append(entry)
    return out
