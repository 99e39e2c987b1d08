"""The formula grammar and its printer: parse ∘ print is the identity on trees (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kiln.autoscale import syntax
from kiln.autoscale.syntax import (
    Assignment,
    Binary,
    Call,
    Conditional,
    Formula,
    Member,
    Method,
    Name,
    Number,
    String,
    Unary,
    parse,
    unparse,
)

_FIRST = "abcxyzABC_"
names = st.builds(
    lambda dollar, first, rest: dollar + first + rest,
    st.sampled_from(["", "$"]),
    st.sampled_from(_FIRST),
    st.text(alphabet=_FIRST + "019", max_size=6),
)
leaves = st.one_of(
    st.floats(min_value=0, allow_nan=False, allow_infinity=False).map(Number),
    st.text(alphabet=st.characters(exclude_characters='"\n'), max_size=6).map(String),
    names.map(Name),
)


def _branches(children: st.SearchStrategy) -> st.SearchStrategy:
    args = st.lists(children, max_size=3).map(tuple)
    return st.one_of(
        st.builds(Unary, st.sampled_from(["-", "!"]), children),
        st.builds(Binary, st.sampled_from(list(syntax.PRECEDENCE)), children, children),
        st.builds(Conditional, children, children, children),
        st.builds(Call, names, args),
        st.builds(Method, children, names, args),
        st.builds(Member, children, names),
    )


expressions = st.recursive(leaves, _branches, max_leaves=12)
formulas = st.lists(st.builds(Assignment, names, expressions), min_size=1, max_size=4).map(
    lambda statements: Formula(tuple(statements))
)


@settings(max_examples=100, deadline=None)
@given(formulas)
def test_parse_of_print_is_the_same_tree(formula: Formula) -> None:
    assert parse(unparse(formula)) == formula


def test_comments_line_breaks_and_a_last_statement_without_semicolon() -> None:
    text = "// sizing\n$a = 1; // one\n\nb =\n  2 *\n  3"
    assert parse(text) == Formula((Assignment("$a", Number(1.0)), Assignment("b", Binary("*", Number(2), Number(3)))))


def test_positions_are_line_and_column_from_1() -> None:
    statement = parse("x = 1;\n  y = max(2, 3)").statements[1]
    assert statement.at == (2, 3)
    assert statement.value.at == (2, 7)
