"""Text features for the monitor: tokens, stems, rule-based entities, numbers and dates.

Pure functions, no I/O. The extractor is deliberately simple and rule-based (issue 4: "the default
needs no model download"): capitalised sequences, acronyms, years, month-day dates and numbers.
ECB+-style news pairs of events in one topic differ mostly in *who*, *where* and *when*, so those
features are kept apart from the bag of words and weighted on their own in :mod:`.score`.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from functools import lru_cache

from feedservice.model import Entry

# Bump when analyse() (or vectorise() in .score) would return something else for the same
# text: pooled items saved by an older analyser are then analysed again after a restart
# (see .saved; a feedservice upgrade does that too).
ANALYSER_VERSION = 2


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOPWORDS: frozenset[str] = _wordset(
    """
    a about above after again against all almost also although always am among an and another
    any anyone anything are around as at be became because become been before being below
    between both but by can cannot could did do does doing done down during each either else
    ever every few for from further get gets getting go goes going gone got had has have having
    he her here hers herself him himself his how however i if in into is it its itself just last
    least less like made make many may me might more most much must my myself near neither never
    new next no nor not now of off often on once one only or other others our ours ourselves out
    over own per perhaps put rather said same say says see seen several shall she should since
    so some still such than that the their theirs them themselves then there these they this
    those though through thus to too under until up upon us very was we well were what when
    where whether which while who whom whose why will with within without would yet you your
    yours yourself yourselves told tell according including mr mrs ms dr according week weeks
    year years day days time times today yesterday tomorrow s t re ve ll d m
    """
)

MONTHS: dict[str, int] = {
    name: i + 1
    for i, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ]
    )
    for name in names
}
WEEKDAYS: frozenset[str] = _wordset("monday tuesday wednesday thursday friday saturday sunday")
# Capitalised words that glue a name together ("Bank of America", "Gulf of Aden").
_NAME_GLUE = frozenset({"of", "de", "del", "da", "van", "von", "al", "bin", "la", "le", "du"})

# Titles and roles split names ("Defense Minister Minoru Kihara" -> "Minoru Kihara") and are
# not names themselves: two ministers of defence are not the same person.
_ROLE_WORDS = _wordset(
    """secretary minister ministers president vice prime chief
    executive officer spokesman spokeswoman spokesperson director chairman chairwoman governor
    mayor senator sen rep representative judge justice general gen lt col sgt capt captain coach
    king queen prince princess pope sir lord lady deputy ambassador commissioner chancellor
    premier sheriff detective officer inspector superintendent professor prof manager actress
    actor star singer former late"""
)

# Portfolio words are part of a role only next to one ("Defense Minister", "Secretary of State")
# and part of a name elsewhere ("Japan Self-Defense Forces", "State Department").
_PORTFOLIO_WORDS = _wordset(
    """state defense defence foreign interior finance home justice health treasury commerce
    energy education agriculture labor labour trade transport economy environment"""
)


def _is_role(tokens: list[str], i: int) -> bool:
    low = tokens[i].lower()
    if low in _ROLE_WORDS:
        return True
    if low not in _PORTFOLIO_WORDS:
        return False
    nxt = tokens[i + 1].lower() if i + 1 < len(tokens) else ""
    prev = tokens[i - 1].lower() if i >= 1 else ""
    prev2 = tokens[i - 2].lower() if i >= 2 else ""
    return nxt in _ROLE_WORDS or prev in _ROLE_WORDS or (prev == "of" and prev2 in _ROLE_WORDS)


# Dateline and byline words that look like names or acronyms.
_BOILERPLATE = _wordset(
    "am pm gmt bst est edt pst pdt cst cdt utc et published updated posted by breaking news"
    " video photo photos ap afp reuters copyright read more"
)

_TAG_RE = re.compile(r"<[^>]+>")
_BLOCK_RE = re.compile(r"</?(?:p|div|br|li|h[1-6]|blockquote|tr|section|article)\b[^>]*>", re.I)
_TOKEN_RE = re.compile(r"[A-Za-z0-9]+(?:[.'’&][A-Za-z0-9]+)*\.?")
_SENT_SPLIT_RE = re.compile(r"(?<=[.!?\"”])\s+(?=[\"“‘(]?[A-Z0-9])")
_YEAR_RE = re.compile(r"^(1[89]\d\d|20\d\d)$")
_NUM_RE = re.compile(r"^\d+(?:\.\d+)?$")
_ORDINAL_RE = re.compile(r"^(\d{1,2})(?:st|nd|rd|th)$")
# Punctuation between two capitalised words ends a name: "Turkmenistan - Ashgabat", "UN, OSCE",
# '"American Pie" star'. A hyphen inside a word ("Self-Defense") does not.
_TOKEN_OR_BREAK_RE = re.compile(_TOKEN_RE.pattern + r"|[,;:()\[\]\"“”/–—]|(?<=\s)-|-(?=\s)")
_MONTH_DAY_RE = re.compile(r"^([A-Za-z]{3,9})\.(\d{1,2})\.?$")  # "Dec.14"


# "Jan" .. "Dec": how the monitor writes a month (spelled-out dates, reasons)
MONTH_ABBREVIATIONS: tuple[str, ...] = tuple(m.capitalize() for m in MONTHS if len(m) == 3)
# Numeric dates, also as sloppy text spaces them ("11 / 28 / 05", "2013 - 09 - 26"): US order
# month/day/year unless the first field cannot be a month (then day/month/year).
_SLASH_DATE_RE = re.compile(r"\b(\d{1,2}) ?/ ?(\d{1,2}) ?/ ?(\d{4}|\d{2})\b")
_ISO_DATE_RE = re.compile(r"\b((?:19|20)\d\d) ?- ?(\d{1,2}) ?- ?(\d{1,2})\b")
# A decimal or a thousands group split by a space ("magnitude 6. 1", "120, 000"): text
# detokenised or typed loosely; joined so that "6. 1" is one number, not a sentence end.
_SPLIT_DECIMAL_RE = re.compile(r"\b(\d{1,2})\. (\d{1,2})\b(?! ?[/:])")
_NUMBER_GAP_RE = re.compile(r"\d ?[-/.,] ?\d")
_SPLIT_THOUSANDS_RE = re.compile(r"(\b[A-Za-z]+\.? )?\b(\d{1,3}(?:, \d{3})+)\b(?!,? ?\d)")


def _spelled_date(month: int, day: int, year: str) -> str | None:
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    if len(year) == 2:
        year = ("20" if int(year) < 50 else "19") + year
    return f"{MONTH_ABBREVIATIONS[month - 1]} {day} {year}"


def _slash_date(m: re.Match[str]) -> str:
    first, second = int(m.group(1)), int(m.group(2))
    month, day = (second, first) if first > 12 else (first, second)
    return _spelled_date(month, day, m.group(3)) or m.group(0)


def _iso_date(m: re.Match[str]) -> str:
    return _spelled_date(int(m.group(2)), int(m.group(3)), m.group(1)) or m.group(0)


def normalise_numbers(text: str) -> str:
    """Numeric dates spelled out ("11/28/05" -> "Nov 28 2005", ISO dates too) and numbers
    split by a stray space joined ("6. 1" -> "6.1", "120, 000" -> "120000"), so dates and
    quantities are recognised whatever way a source writes them."""
    if not _NUMBER_GAP_RE.search(text):  # every rewrite below needs one: a quick way out
        return text
    text = _ISO_DATE_RE.sub(_iso_date, text)
    text = _SLASH_DATE_RE.sub(_slash_date, text)
    text = _SPLIT_DECIMAL_RE.sub(r"\1.\2", text)
    return _SPLIT_THOUSANDS_RE.sub(_thousands, text)


def _thousands(m: re.Match[str]) -> str:
    before = m.group(1) or ""
    if before.strip().rstrip(".").lower() in MONTHS:
        return m.group(0)  # "May 3, 200 people": a date, then a number
    return before + m.group(2).replace(", ", "")


def html_to_paragraphs(content_html: str) -> list[str]:
    """Split sanitised HTML into plain-text paragraphs (block elements and line breaks)."""
    marked = _BLOCK_RE.sub("\n", content_html)
    text = html.unescape(_TAG_RE.sub(" ", marked))
    return [" ".join(p.split()) for p in text.split("\n") if p.strip()]


def split_sentences(paragraph: str) -> list[str]:
    """A cheap sentence splitter: good enough to know which word starts a sentence."""
    return [s for s in _SENT_SPLIT_RE.split(paragraph) if s.strip()]


@lru_cache(maxsize=1 << 16)  # pure and deterministic: a cache, not state
def stem(word: str) -> str:
    """A light, conservative suffix stripper (plural/-ing/-ed), enough to join word forms."""
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("sses"):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if word.endswith("ing") and len(word) > 6:
        return word[:-3]
    if word.endswith("ed") and len(word) > 5:
        return word[:-2]
    return word


def _tokenise(text: str) -> tuple[list[str], frozenset[int]]:
    """Cleaned tokens, and the positions of those before which punctuation ends a name."""
    parts = list(map(_token_parts, _TOKEN_OR_BREAK_RE.findall(text)))
    if None not in parts and tuple not in map(type, parts):
        return parts, _NO_CUTS  # type: ignore[return-value]  # all plain tokens, checked
    tokens: list[str] = []
    cuts: set[int] = set()
    cut = False
    for part in parts:
        if part is None:
            cut = True
            continue
        if cut:
            cuts.add(len(tokens))
            cut = False
        if isinstance(part, tuple):
            tokens += part
        else:
            tokens.append(part)
    return tokens, frozenset(cuts)


_NO_CUTS: frozenset[int] = frozenset()


# Pure and deterministic: caches, not state. A news corpus repeats most of its tokens, so each
# distinct token is cleaned and classified once, not once per occurrence.
@lru_cache(maxsize=1 << 16)
def _token_parts(raw: str) -> str | tuple[str, str] | None:
    """What one match of ``_TOKEN_OR_BREAK_RE`` stands for: None for punctuation that ends a
    name, else the cleaned token, or a glued month and day ("Dec.14" -> ("Dec", "14"))."""
    if not raw[0].isalnum():
        return None
    token = _clean(raw)
    if "." in token:
        md = _MONTH_DAY_RE.match(token)
        if md and md.group(1).lower() in MONTHS:
            return (md.group(1), md.group(2))
    return token


# _WordInfo.role: how a capitalised word stands to names.
_NOT_ROLE, _ALWAYS_ROLE, _PORTFOLIO = 0, 1, 2


@lru_cache(maxsize=1 << 16)
def _word_info(tok: str) -> tuple[str, str | None, bool, bool, int, bool, bool, str]:
    """What :func:`analyse` needs of a word token (not starting with a digit) on its own:
    (lower case, stem if it is a term else None, capitalised, acronym, role, name glue,
    never a name, entity key)."""
    low = tok.lower()
    term = stem(low) if low not in STOPWORDS and len(low) > 1 and low not in MONTHS else None
    if low in STOPWORDS or low in MONTHS or low in _ROLE_WORDS:
        role = _ALWAYS_ROLE
    elif low in _PORTFOLIO_WORDS:
        role = _PORTFOLIO
    else:
        role = _NOT_ROLE
    return (
        low,
        term,
        tok[0].isupper(),
        tok.isupper() and 2 <= len(tok.replace(".", "")) <= 6,
        role,
        low in _NAME_GLUE,
        low in _BOILERPLATE or "'" in tok,
        low.replace(".", ""),
    )


def _clean(token: str) -> str:
    token = token.replace("’", "'")
    if token.endswith("'s") or token.endswith("'S"):
        token = token[:-2]
    token = token.rstrip("'")
    if token.endswith(".") and "." not in token[:-1]:
        token = token[:-1]  # a full stop, not an abbreviation like "U.S."
    return token


@dataclass(frozen=True, slots=True)
class Features:
    """What the monitor knows about one text.

    ``terms``: stem -> weighted count (title counted ``TITLE_WEIGHT`` times); ``entities``:
    lower-case name words and acronyms -> count; ``names``: display forms of names in
    first-seen order; ``times``: years (``y:2013``), month-day dates (``md:5-3``) and
    weekdays (``wd:friday``); ``numbers``: other numbers (``n:23``).
    """

    terms: dict[str, float]
    entities: dict[str, float]
    names: tuple[str, ...]
    times: frozenset[str]
    numbers: frozenset[str]
    length: int
    surface: dict[str, str]

    @property
    def keys(self) -> frozenset[str]:
        """Every key that goes into the corpus statistics (terms, entities and times)."""
        return frozenset(self.terms) | {f"e:{e}" for e in self.entities} | self.times


TITLE_WEIGHT = 2.0


def _is_headline(tokens: list[str]) -> bool:
    """Title Case or ALL CAPS lines make every word look like a name."""
    words = [t for t in tokens if t[:1].isalpha() and len(t) > 3]
    if len(words) < 3:
        return False
    caps = sum(1 for t in words if t[0].isupper())
    return caps >= 0.7 * len(words)


def _next_is_capital(tokens: list[str]) -> bool:
    return len(tokens) > 1 and tokens[1][:1].isupper() and tokens[1].lower() not in STOPWORDS


def analyse(title: str, paragraphs: list[str]) -> Features:
    """Extract :class:`Features` from a title and plain-text paragraphs."""
    sentences: list[tuple[list[str], float]] = []
    cuts: list[frozenset[int]] = []
    # Title Case is a headline's style, not prose: only the title and lines without a closing
    # full stop can be headlines ("The talks were attended by U.S. Secretary ..." is prose).
    may_head: list[bool] = []
    if title.strip():
        tokens, cut = _tokenise(normalise_numbers(title))
        sentences.append((tokens, TITLE_WEIGHT))
        cuts.append(cut)
        may_head.append(True)
    for paragraph in paragraphs:
        for sentence in split_sentences(normalise_numbers(paragraph)):
            tokens, cut = _tokenise(sentence)
            sentences.append((tokens, 1.0))
            cuts.append(cut)
            may_head.append(not sentence.rstrip().endswith((".", "!", "?", '"', "”")))

    # A capitalised word at the start of a sentence or in a Title Case headline counts as a name
    # only if the text also capitalises it mid-sentence ("Somehow Reid ..." -> Reid, not Somehow).
    heads = [
        head and _is_headline(toks) for (toks, _), head in zip(sentences, may_head, strict=True)
    ]
    mid_caps = {
        t.lower()
        for (toks, _), head in zip(sentences, heads, strict=True)
        if not head
        for t in toks[1:]
        if t[:1].isupper()
    }
    body_less = len(sentences) <= 1
    terms: dict[str, float] = {}
    surface: dict[str, str] = {}
    entities: dict[str, float] = {}
    names: dict[str, None] = {}
    times: set[str] = set()
    numbers: set[str] = set()
    length = 0
    word_info = _word_info

    for (tokens, weight), headline, cut in zip(sentences, heads, cuts, strict=True):
        run: list[str] = []

        def flush(run: list[str]) -> None:
            while run and run[-1].lower() in _NAME_GLUE:
                run.pop()
            if len(run) >= 2:
                names.setdefault(" ".join(run), None)
            elif len(run) == 1 and (len(run[0]) > 1):
                names.setdefault(run[0], None)
            run.clear()

        for i, tok in enumerate(tokens):
            if not tok:
                continue
            if run and i in cut:
                flush(run)
            length += 1
            # --- numbers and dates
            if tok[0].isdigit():
                if run:
                    flush(run)
                low = tok.lower()
                m = _ORDINAL_RE.match(low)
                day = int(m.group(1)) if m else (int(low) if low.isdigit() and len(low) <= 2 else 0)
                if _YEAR_RE.match(low):
                    times.add(f"y:{low}")
                elif 1 <= day <= 31 and i > 0 and tokens[i - 1].lower().rstrip(".") in MONTHS:
                    times.add(f"md:{MONTHS[tokens[i - 1].lower().rstrip('.')]}-{day}")
                elif (
                    1 <= day <= 31
                    and i + 2 < len(tokens)
                    and tokens[i + 1].lower() == "of"
                    and tokens[i + 2].lower() in MONTHS
                ) or (1 <= day <= 31 and i + 1 < len(tokens) and tokens[i + 1].lower() in MONTHS):
                    month = tokens[i + 2] if tokens[i + 1].lower() == "of" else tokens[i + 1]
                    times.add(f"md:{MONTHS[month.lower()]}-{day}")
                elif _NUM_RE.match(low):
                    numbers.add(f"n:{low}")
                continue
            low, term, capital, is_acronym, role, glue, plain, ekey = word_info(tok)
            if low in WEEKDAYS:
                if run:
                    flush(run)
                times.add(f"wd:{low}")
                continue
            if term is not None:
                terms[term] = terms.get(term, 0.0) + weight
                surface.setdefault(term, low)
            # --- names
            if capital and (role == _ALWAYS_ROLE or (role == _PORTFOLIO and _is_role(tokens, i))):
                if run and glue:
                    run.append(tok)
                elif run:
                    flush(run)
                continue
            if plain:
                capital = is_acronym = False  # "PUBLISHED 5:03 PM", "I'm"
            elif (
                capital
                and (i == 0 or headline)
                and not body_less
                and low not in mid_caps
                and not (i == 0 and not headline and _next_is_capital(tokens))
            ):
                capital = is_acronym = False  # an ordinary word starting a sentence / headline
            if capital or is_acronym:
                run.append(tok)
                entities[ekey] = entities.get(ekey, 0.0) + weight
            elif run:
                if glue:
                    run.append(tok)
                else:
                    flush(run)
        flush(run)

    return Features(
        terms=terms,
        entities=entities,
        names=tuple(names),
        times=frozenset(times),
        numbers=frozenset(numbers),
        length=length,
        surface=surface,
    )


def entry_text(entry: Entry) -> tuple[str, list[str]]:
    """The title and plain-text paragraphs of an entry (content, else the summary)."""
    paragraphs = html_to_paragraphs(entry.content_html) if entry.content_html else []
    if not paragraphs and entry.summary:
        paragraphs = [entry.summary]
    return entry.title, paragraphs


def analyse_entry(entry: Entry) -> Features:
    """:func:`analyse` applied to an entry's title and content."""
    title, paragraphs = entry_text(entry)
    return analyse(title, paragraphs)
