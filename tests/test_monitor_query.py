"""The watch query language: operators, precedence, prefixes, phrases and errors with columns."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from feedservice.errors import QueryError
from feedservice.model import Entry
from feedservice.monitor import parse_query
from feedservice.monitor.query import And, Not, Or, QueryDoc, Term

T0 = datetime(2024, 7, 28, tzinfo=UTC)


def doc(title: str, body: str = "", source: str = "wire") -> QueryDoc:
    return QueryDoc.build(title, body, source)


JAPAN = doc(
    "Japan and U.S. to establish joint military headquarters",
    "The joint headquarters will serve U.S. forces in Japan. Minister Hamada welcomed it.",
)
KOREA = doc("South Korea holds elections", "Voters chose a new parliament in Seoul.", "blog")


@pytest.mark.parametrize(
    ("query", "japan", "korea"),
    [
        ("japan", True, False),
        ("JAPAN", True, False),  # matching is case-insensitive
        ("japan korea", False, False),  # implicit AND
        ("japan AND headquarters", True, False),
        ("japan OR korea", True, True),
        ("NOT japan", False, True),
        ("elections", False, True),
        ("election", False, True),  # a word matches its light stem
        ('"joint headquarters"', True, False),
        ('"headquarters joint"', False, False),  # a phrase keeps its order
        ('"joint   military"', True, False),
        ("title:hamada", False, False),
        ("hamada", True, False),
        ('title:"joint military"', True, False),
        ("title:parliament", False, False),
        ("source:wire", True, False),
        ("source:BLOG", False, True),
        ("(japan OR korea) AND NOT seoul", True, False),
        ("japan OR korea AND seoul", True, True),  # AND binds tighter than OR
        ("NOT japan OR seoul", False, True),  # NOT binds tighter than OR
        ("NOT (japan OR seoul)", False, False),
        ("japan and korea", False, False),  # lower-case "and" is a word, not an operator
        ("U.S. headquarters", True, False),
    ],
)
def test_query_matches(query: str, japan: bool, korea: bool) -> None:
    q = parse_query(query)
    assert q.matches(JAPAN) is japan
    assert q.matches(KOREA) is korea


def test_precedence_builds_the_expected_tree() -> None:
    root = parse_query("a OR b c NOT d").root
    assert isinstance(root, Or)
    left, right = root.children
    assert isinstance(left, Term) and left.text == "a"
    assert isinstance(right, And)
    assert [type(c) for c in right.children] == [Term, Term, Not]


def test_terms_lists_positive_terms_as_written() -> None:
    q = parse_query('"joint headquarters" OR title:Tokyo NOT Beijing source:wire')
    assert q.terms() == ('"joint headquarters"', "title:Tokyo", "source:wire")
    assert q.matched_terms(JAPAN) == ('"joint headquarters"', "source:wire")


def test_matches_an_entry() -> None:
    entry = Entry(
        id="1",
        source="wire",
        title="Japan and U.S. to establish joint military headquarters",
        link=None,
        published=T0,
        updated=T0,
        summary="",
        content_html="<p>The <b>joint headquarters</b> opens in Tokyo.</p>",
        content_hash="h",
    )
    assert parse_query('"joint headquarters" tokyo').matches(entry)
    assert not parse_query("title:tokyo").matches(entry)


def test_anchors_cover_every_match() -> None:
    assert parse_query("japan OR korea").anchors() == frozenset({"japan", "korea"})
    assert parse_query("japan NOT korea").anchors() == frozenset({"japan"})
    assert parse_query("NOT korea").anchors() is None
    assert parse_query("source:wire").anchors() is None


@pytest.mark.parametrize(
    ("query", "column", "fragment"),
    [
        ("", 1, "empty query"),
        ("   ", 4, "empty query"),
        ("(japan OR korea", 1, "missing ')'"),
        ("japan OR (korea", 10, "missing ')'"),
        ("japan)", 6, "unbalanced ')'"),
        ('japan "joint headquarters', 7, "missing closing quote"),
        ("japan AND", 10, "end of the query"),
        ("OR japan", 1, "found OR"),
        ("japan OR OR korea", 10, "found OR"),
        ("NOT", 4, "end of the query"),
        ("()", 2, "empty parentheses"),
        ("japan (AND korea)", 8, "found AND"),
        ("author:smith", 1, "unknown field 'author'"),
        ("japan title: korea", 13, "title: needs a word"),
        ("title:(japan)", 7, "title: needs a word"),
        ('""', 1, "empty phrase"),
        ("japan AND )", 11, "before ')'"),
        # found by fuzzing: a thousand levels raised RecursionError, not a QueryError
        ("(" * 1000 + "japan" + ")" * 1000, 65, "nested more than 64 levels"),
        ("NOT " * 1000 + "japan", 257, "nested more than 64 levels"),
    ],
)
def test_syntax_errors_name_the_column(query: str, column: int, fragment: str) -> None:
    with pytest.raises(QueryError) as info:
        parse_query(query, watch="japan-us-hq")
    err = info.value
    assert err.column == column
    assert err.watch == "japan-us-hq"
    assert fragment in str(err)
    assert str(err).startswith(f"watch 'japan-us-hq': query column {column}: ")


def test_nesting_up_to_the_limit_parses_and_matches() -> None:
    query = parse_query("(" * 64 + "japan" + ")" * 64)
    assert query.matches(QueryDoc.build("Japan", "", "wire"))
    assert parse_query("NOT " * 64 + "japan").matches(QueryDoc.build("Japan", "", "wire"))


def test_query_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="column 1"):
        parse_query(")")
