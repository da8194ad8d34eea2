"""The watch query language (issue 4 item 1): words, "phrases", AND / OR / NOT, parentheses,
``title:`` and ``source:`` prefixes.

Grammar (NOT binds tighter than AND, AND tighter than OR; adjacent terms are ANDed)::

    query   := or_expr
    or_expr := and_expr ("OR" and_expr)*
    and_expr:= not_expr (["AND"] not_expr)*
    not_expr:= "NOT" not_expr | primary
    primary := "(" or_expr ")" | [field ":"] (WORD | PHRASE)
    field   := "title" | "source"

Operators are the upper-case words AND, OR, NOT (as in Lucene and most search boxes, so the
lower-case words "and", "or", "not" stay searchable); matching itself is case-insensitive, and
words match their light stem ("election" finds "elections"). ``source:`` compares the source
name exactly (case-insensitively). Columns in :class:`~feedservice.errors.QueryError` are 1-based.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from feedservice.errors import QueryError
from feedservice.model import Entry
from feedservice.monitor.text import entry_text, stem

_FIELDS = ("title", "source")
_WORD_RE = re.compile(r"[A-Za-z0-9]+(?:[.'’&][A-Za-z0-9]+)*")


def query_tokens(text: str) -> tuple[str, ...]:
    """Lower-cased, stemmed word tokens, the unit both queries and documents are compared in."""
    out = []
    for tok in _WORD_RE.findall(text):
        low = tok.lower().replace("’", "'")
        if low.endswith("'s"):
            low = low[:-2]
        out.append(stem(low.replace(".", "")))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class QueryDoc:
    """What a query is evaluated against: the title and body token sequences and the source."""

    title: tuple[str, ...]
    body: tuple[str, ...]
    source: str
    title_set: frozenset[str] = field(default=frozenset())
    body_set: frozenset[str] = field(default=frozenset())

    @classmethod
    def build(cls, title: str, body: str, source: str) -> QueryDoc:
        t = query_tokens(title)
        b = query_tokens(body)
        return cls(t, b, source.lower(), frozenset(t), frozenset(t) | frozenset(b))

    @classmethod
    def from_entry(cls, entry: Entry) -> QueryDoc:
        title, paragraphs = entry_text(entry)
        return cls.build(title, "\n".join(paragraphs), entry.source)


def _contains(seq: tuple[str, ...], words: tuple[str, ...]) -> bool:
    n = len(words)
    first = words[0]
    return any(tok == first and seq[i : i + n] == words for i, tok in enumerate(seq))


# --- the tree ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Term:
    """A word or phrase, optionally restricted to a field."""

    text: str  # as written (for reasons)
    words: tuple[str, ...]  # normalised
    field: str | None = None  # None = title or body
    phrase: bool = False

    def matches(self, doc: QueryDoc) -> bool:
        if self.field == "source":
            return doc.source == self.text.lower()
        seq, present = (
            (doc.title, doc.title_set) if self.field == "title" else (doc.body, doc.body_set)
        )
        if not all(w in present for w in self.words):
            return False
        if len(self.words) == 1:
            return True
        if self.field is None and _contains(doc.title, self.words):
            return True
        return _contains(seq, self.words)

    def describe(self) -> str:
        shown = f'"{self.text}"' if self.phrase else self.text
        return f"{self.field}:{shown}" if self.field else shown


@dataclass(frozen=True, slots=True)
class Not:
    child: Node

    def matches(self, doc: QueryDoc) -> bool:
        return not self.child.matches(doc)


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Node, ...]

    def matches(self, doc: QueryDoc) -> bool:
        return all(c.matches(doc) for c in self.children)


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Node, ...]

    def matches(self, doc: QueryDoc) -> bool:
        return any(c.matches(doc) for c in self.children)


Node = Term | Not | And | Or


def _positive_terms(node: Node, negated: bool = False) -> Iterable[Term]:
    if isinstance(node, Term):
        if not negated:
            yield node
    elif isinstance(node, Not):
        yield from _positive_terms(node.child, not negated)
    else:
        for c in node.children:
            yield from _positive_terms(c, negated)


def _anchors(node: Node) -> frozenset[str] | None:
    """Words of which every matching document holds at least one; None if no such set exists.

    Used by the monitor's index so a query-only watch is checked only against entries that
    could match it.
    """
    if isinstance(node, Term):
        if node.field == "source" or not node.words:
            return None
        return frozenset({max(node.words, key=len)})
    if isinstance(node, Not):
        return None
    if isinstance(node, Or):
        out: set[str] = set()
        for c in node.children:
            a = _anchors(c)
            if a is None:
                return None
            out |= a
        return frozenset(out)
    best: frozenset[str] | None = None
    for c in node.children:
        a = _anchors(c)
        if a is not None and (best is None or len(a) < len(best)):
            best = a
    return best


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed watch query."""

    text: str
    root: Node

    def matches(self, doc: Entry | QueryDoc) -> bool:
        """True when the entry (or prepared :class:`QueryDoc`) satisfies the query."""
        qd = doc if isinstance(doc, QueryDoc) else QueryDoc.from_entry(doc)
        return self.root.matches(qd)

    def terms(self) -> tuple[str, ...]:
        """The positive (not negated) terms, as written, for reasons."""
        return tuple(dict.fromkeys(t.describe() for t in _positive_terms(self.root)))

    def matched_terms(self, doc: Entry | QueryDoc) -> tuple[str, ...]:
        """The positive terms the document contains, for a match's reasons."""
        qd = doc if isinstance(doc, QueryDoc) else QueryDoc.from_entry(doc)
        return tuple(
            dict.fromkeys(t.describe() for t in _positive_terms(self.root) if t.matches(qd))
        )

    def anchors(self) -> frozenset[str] | None:
        """See :func:`_anchors`."""
        return _anchors(self.root)


# --- lexer and parser --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # WORD PHRASE AND OR NOT LPAR RPAR FIELD END
    value: str
    col: int  # 1-based


def _lex(text: str, watch: str | None) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        col = i + 1
        if ch == "(":
            toks.append(_Tok("LPAR", ch, col))
            i += 1
            continue
        if ch == ")":
            toks.append(_Tok("RPAR", ch, col))
            i += 1
            continue
        if ch in '"“”':
            j = i + 1
            while j < n and text[j] not in '"“”':
                j += 1
            if j >= n:
                raise QueryError(
                    "unterminated phrase: missing closing quote", column=col, watch=watch
                )
            toks.append(_Tok("PHRASE", text[i + 1 : j], col))
            i = j + 1
            continue
        j = i
        while j < n and not text[j].isspace() and text[j] not in '()"“”':
            j += 1
        word = text[i:j]
        head, colon, rest = word.partition(":")
        if colon and head.isalpha():
            if head.lower() not in _FIELDS:
                raise QueryError(
                    f"unknown field {head!r}: expected title: or source:", column=col, watch=watch
                )
            toks.append(_Tok("FIELD", head.lower(), col))
            i += len(head) + 1
            if rest:
                continue  # the value is lexed as the next word
            if i >= n or text[i].isspace() or text[i] in "()":
                raise QueryError(
                    f"{head.lower()}: needs a word or a phrase", column=i + 1, watch=watch
                )
            continue
        if word in ("AND", "OR", "NOT"):
            toks.append(_Tok(word, word, col))
        else:
            toks.append(_Tok("WORD", word, col))
        i = j
    toks.append(_Tok("END", "", n + 1))
    return toks


#: Parentheses and NOTs nested deeper than this are a QueryError: the parser and the matcher
#: recurse once per level, and "((((..." a thousand deep raised RecursionError, which
#: stopped start-up with a traceback instead of an error naming the watch's query.
MAX_NESTING = 64


class _Parser:
    def __init__(self, text: str, watch: str | None) -> None:
        self.toks = _lex(text, watch)
        self.pos = 0
        self.watch = watch
        self.depth = 0

    def nest(self, tok: _Tok) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(f"nested more than {MAX_NESTING} levels deep", tok)

    def peek(self) -> _Tok:
        return self.toks[self.pos]

    def take(self) -> _Tok:
        tok = self.toks[self.pos]
        self.pos += 1
        return tok

    def error(self, message: str, tok: _Tok) -> QueryError:
        return QueryError(message, column=tok.col, watch=self.watch)

    def parse(self) -> Node:
        if self.peek().kind == "END":
            raise self.error("empty query", self.peek())
        node = self.or_expr()
        tok = self.peek()
        if tok.kind == "RPAR":
            raise self.error("unbalanced ')': no matching '('", tok)
        if tok.kind != "END":  # pragma: no cover - every other token starts a primary
            raise self.error(f"unexpected {tok.value!r}", tok)
        return node

    def or_expr(self) -> Node:
        children = [self.and_expr()]
        while self.peek().kind == "OR":
            self.take()
            children.append(self.and_expr())
        return children[0] if len(children) == 1 else Or(tuple(children))

    def and_expr(self) -> Node:
        children = [self.not_expr()]
        while True:
            kind = self.peek().kind
            if kind == "AND":
                self.take()
                children.append(self.not_expr())
            elif kind in ("WORD", "PHRASE", "FIELD", "NOT", "LPAR"):
                children.append(self.not_expr())  # implicit AND
            else:
                break
        return children[0] if len(children) == 1 else And(tuple(children))

    def not_expr(self) -> Node:
        if self.peek().kind == "NOT":
            self.nest(self.take())
            node = Not(self.not_expr())
            self.depth -= 1
            return node
        return self.primary()

    def primary(self) -> Node:
        tok = self.take()
        if tok.kind == "LPAR":
            if self.peek().kind == "RPAR":
                raise self.error("empty parentheses", self.peek())
            self.nest(tok)
            node = self.or_expr()
            close = self.peek()
            if close.kind != "RPAR":
                raise self.error("unbalanced '(': missing ')'", tok)
            self.take()
            self.depth -= 1
            return node
        field_name: str | None = None
        if tok.kind == "FIELD":
            field_name = tok.value
            tok = self.take()
            if tok.kind not in ("WORD", "PHRASE"):
                raise self.error(f"{field_name}: needs a word or a phrase", tok)
        if tok.kind in ("WORD", "PHRASE"):
            words = query_tokens(tok.value)
            if field_name != "source" and not words:
                what = "empty phrase" if tok.kind == "PHRASE" else f"{tok.value!r} has no words"
                raise self.error(what, tok)
            return Term(tok.value.strip(), words, field_name, tok.kind == "PHRASE")
        if tok.kind == "END":
            raise self.error("expected a word, a phrase or '(' at the end of the query", tok)
        if tok.kind == "RPAR":
            raise self.error("expected a word, a phrase or '(' before ')'", tok)
        raise self.error(f"expected a word, a phrase or '(' but found {tok.value}", tok)


def parse_query(text: str, *, watch: str | None = None) -> Query:
    """Parse a watch query.

    Raises :class:`~feedservice.errors.QueryError` (with the 1-based ``column`` and the ``watch``
    name) for an empty query, an unbalanced parenthesis or quote, an operator without an
    operand, an unknown ``field:`` prefix, or nesting deeper than :data:`MAX_NESTING`.
    """
    return Query(text, _Parser(text, watch).parse())
