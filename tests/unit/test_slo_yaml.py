"""The YAML writer of `http-metrics`: whatever the text (route templates, annotations),
a YAML reader gets the same strings back."""

from __future__ import annotations

from decimal import Decimal

import yaml
from hypothesis import given
from hypothesis import strategies as st

from asgi_metrics.slo.yaml_out import Commented, Folded, Literal, Spaced, dump, scalar

# Characters YAML can carry at all (it has no way to write a surrogate), any of them.
TEXT = st.text(st.characters(exclude_categories=("Cs",)))
TRICKY = [
    "", " ", "yes", "No", "on", "OFF", "null", "~", "=", "<<", "true", "1", "1.0", "-1",
    ".inf", "0x1f", "1_000", "2024-01-01", "5m", "1e3", "- item", "? key", "a: b", "a #b",
    "#c", "key:", "{x}", "[x]", "'q'", '"q"', "!tag", "&anchor", "*alias", "%dir", "@at",
    "`tick", "|", ">", "/users/{id}", "\t", "a\nb", "\u2028", "\x85", "\U0001f600", "é",
]


def round_trip(value: object) -> object:
    return yaml.safe_load(dump({"key": value}))["key"]


@given(TEXT)
def test_any_string_reads_back(text: str) -> None:
    assert round_trip(text) == text
    assert round_trip([text]) == [text]
    assert yaml.safe_load(dump({"items": [{"a": text, "b": [text]}]})) == {
        "items": [{"a": text, "b": [text]}]
    }


def test_tricky_strings_read_back_as_strings() -> None:
    for text in TRICKY:
        assert round_trip(text) == text, text


def test_plain_where_it_reads_the_same() -> None:
    assert scalar("route:http_requests:rate5m") == "route:http_requests:rate5m"
    assert scalar("5m") == "5m"
    assert scalar('sum(rate(x{status=~"5.."}[5m]))') == 'sum(rate(x{status=~"5.."}[5m]))'
    assert scalar("{{ $labels.job }} is down") == '"{{ $labels.job }} is down"'
    assert scalar("yes") == '"yes"'
    assert scalar(Decimal("0.0144")) == "0.0144"


def test_blocks_comments_and_spacing() -> None:
    text = dump(
        {
            "rules": Spaced(
                [
                    Commented(("section", "", "about the rule"), {"expr": Literal("a\n  /\nb\n")}),
                    {"description": Folded(("one line", "and the next")), "empty": []},
                ]
            )
        },
        header=["title", ""],
    )
    assert text == (
        "# title\n"
        "#\n"
        "rules:\n"
        "  # section\n"
        "\n"
        "  # about the rule\n"
        "  - expr: |\n"
        "      a\n"
        "        /\n"
        "      b\n"
        "\n"
        "  - description: >-\n"
        "      one line\n"
        "      and the next\n"
        "    empty: []\n"
    )
    assert yaml.safe_load(text) == {
        "rules": [{"expr": "a\n  /\nb\n"}, {"description": "one line and the next", "empty": []}]
    }
