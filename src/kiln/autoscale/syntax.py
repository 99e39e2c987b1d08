"""The autoscale formula language (batch-semantics-2 §4.1): a Lark grammar, the tree it builds, and a printer.

Precedence is not documented; it is C's: unary `- !` > `* /` > `+ -` > `< <= > >=` > `== !=` > `&&` > `||` > `?:`.
Names are case-sensitive. A statement is `name = expr`; statements are separated by `;` and the last may omit it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import lark

_GRAMMAR = r"""
start: _SEP* (statement (_SEP+ statement)* _SEP*)?
statement: NAME "=" expr

?expr: or_expr "?" expr ":" expr -> conditional
     | or_expr
?or_expr: or_expr "||" and_expr -> or_
        | and_expr
?and_expr: and_expr "&&" eq_expr -> and_
         | eq_expr
?eq_expr: eq_expr "==" rel_expr -> eq
        | eq_expr "!=" rel_expr -> ne
        | rel_expr
?rel_expr: rel_expr "<" add_expr -> lt
         | rel_expr "<=" add_expr -> le
         | rel_expr ">" add_expr -> gt
         | rel_expr ">=" add_expr -> ge
         | add_expr
?add_expr: add_expr "+" mul_expr -> add
         | add_expr "-" mul_expr -> sub
         | mul_expr
?mul_expr: mul_expr "*" unary -> mul
         | mul_expr "/" unary -> div
         | unary
?unary: "-" unary -> neg
      | "!" unary -> not_
      | postfix
?postfix: postfix "." NAME "(" [args] ")" -> method
        | postfix "." NAME -> member
        | NAME "(" [args] ")" -> call
        | atom
?atom: NUMBER -> number
     | STRING -> string
     | NAME -> name
     | "(" expr ")"
args: expr ("," expr)*

_SEP: ";"
NAME: /\$?[A-Za-z_][A-Za-z0-9_]*/
NUMBER: /(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?/
STRING: /"[^"\n]*"/
COMMENT: /\/\/[^\n]*/
%ignore COMMENT
%ignore /\s+/
"""

#: Batch's limits on a formula's text (batch-semantics §7.3).
MAX_BYTES = 8 * 1024
MAX_STATEMENTS = 100

#: Binary operators by the grammar's rule name, and their precedence (higher binds tighter).
BINARY = {
    "or_": "||",
    "and_": "&&",
    "eq": "==",
    "ne": "!=",
    "lt": "<",
    "le": "<=",
    "gt": ">",
    "ge": ">=",
    "add": "+",
    "sub": "-",
    "mul": "*",
    "div": "/",
}
PRECEDENCE = {"||": 1, "&&": 2, "==": 3, "!=": 3, "<": 4, "<=": 4, ">": 4, ">=": 4, "+": 5, "-": 5, "*": 6, "/": 6}
_CONDITIONAL, _UNARY, _POSTFIX = 0, 7, 8

Position = tuple[int, int]  #: (line, column), both from 1


class FormulaSyntaxError(Exception):
    """The formula does not parse, or uses what the language does not have; the message names line and column."""

    def __init__(self, message: str, position: Position | None = None) -> None:
        self.position = position
        where = f"Line {position[0]}, Col {position[1]}: " if position else ""
        super().__init__(where + message)


# ---------------------------------------------------------------------------------------------- the tree
@dataclass(frozen=True, slots=True)
class Number:
    value: float
    at: Position = field(default=(0, 0), compare=False)


@dataclass(frozen=True, slots=True)
class String:
    value: str
    at: Position = field(default=(0, 0), compare=False)


@dataclass(frozen=True, slots=True)
class Name:
    name: str
    at: Position = field(default=(0, 0), compare=False)


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  #: "-" or "!"
    operand: Expr
    at: Position = field(default=(0, 0), compare=False)


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    left: Expr
    right: Expr
    at: Position = field(default=(0, 0), compare=False)


@dataclass(frozen=True, slots=True)
class Conditional:
    test: Expr
    then: Expr
    otherwise: Expr
    at: Position = field(default=(0, 0), compare=False)


@dataclass(frozen=True, slots=True)
class Call:
    function: str
    args: tuple[Expr, ...]
    at: Position = field(default=(0, 0), compare=False)


@dataclass(frozen=True, slots=True)
class Method:
    target: Expr
    method: str
    args: tuple[Expr, ...]
    at: Position = field(default=(0, 0), compare=False)


@dataclass(frozen=True, slots=True)
class Member:
    target: Expr
    member: str
    at: Position = field(default=(0, 0), compare=False)


Expr = Number | String | Name | Unary | Binary | Conditional | Call | Method | Member


@dataclass(frozen=True, slots=True)
class Assignment:
    name: str
    value: Expr
    at: Position = field(default=(0, 0), compare=False)


@dataclass(frozen=True, slots=True)
class Formula:
    statements: tuple[Assignment, ...]


# ---------------------------------------------------------------------------------------------- parsing
def _at(meta: Any) -> Position:
    return (getattr(meta, "line", 0), getattr(meta, "column", 0))


def _binary(op: str) -> Any:
    def build(self: Any, meta: Any, children: list[Any]) -> Binary:
        return Binary(op, children[0], children[1], _at(meta))

    return build


@lark.v_args(meta=True)
class _Builder(lark.Transformer):
    """Lark's parse tree → the dataclasses above."""

    def start(self, meta: Any, children: list[Assignment]) -> Formula:
        return Formula(tuple(children))

    def statement(self, meta: Any, children: list[Any]) -> Assignment:
        name, value = children
        return Assignment(str(name), value, (name.line, name.column))

    def conditional(self, meta: Any, children: list[Any]) -> Conditional:
        return Conditional(children[0], children[1], children[2], _at(meta))

    locals().update({rule: _binary(op) for rule, op in BINARY.items()})

    def neg(self, meta: Any, children: list[Any]) -> Unary:
        return Unary("-", children[0], _at(meta))

    def not_(self, meta: Any, children: list[Any]) -> Unary:
        return Unary("!", children[0], _at(meta))

    def method(self, meta: Any, children: list[Any]) -> Method:
        target, name, args = children
        return Method(target, str(name), tuple(args or ()), _at(meta))

    def member(self, meta: Any, children: list[Any]) -> Member:
        return Member(children[0], str(children[1]), _at(meta))

    def call(self, meta: Any, children: list[Any]) -> Call:
        name, args = children
        return Call(str(name), tuple(args or ()), _at(meta))

    def args(self, meta: Any, children: list[Any]) -> list[Any]:
        return children

    def number(self, meta: Any, children: list[Any]) -> Number:
        return Number(float(children[0]), _at(meta))

    def string(self, meta: Any, children: list[Any]) -> String:
        return String(str(children[0])[1:-1], _at(meta))

    def name(self, meta: Any, children: list[Any]) -> Name:
        return Name(str(children[0]), _at(meta))


@functools.cache
def _parser() -> lark.Lark:
    return lark.Lark(_GRAMMAR, parser="lalr", lexer="contextual", propagate_positions=True, maybe_placeholders=True)


_TOKENS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string",
    "_SEP": "';'",
    "$END": "end of the formula",
    "SEMICOLON": "';'",
    "EQUAL": "'='",
    "LPAR": "'('",
    "RPAR": "')'",
    "COMMA": "','",
    "DOT": "'.'",
    "COLON": "':'",
    "QMARK": "'?'",
}


def parse(text: str) -> Formula:
    """The formula's tree; FormulaSyntaxError naming the line and column of the first thing that does not fit."""
    try:
        tree = _parser().parse(text)
    except lark.exceptions.UnexpectedCharacters as exc:
        char = exc.char  # lark types it as None
        hint = " (an unterminated string?)" if char == '"' else ""
        raise FormulaSyntaxError(f"Unexpected character '{char}'{hint}.", (exc.line, exc.column)) from None
    except lark.exceptions.UnexpectedToken as exc:
        at_end = exc.token.type == "$END"
        found = "end of the formula" if at_end else f"'{exc.token}'"
        expected = sorted({_TOKENS.get(name, f"'{_literal(name)}'") for name in exc.expected})
        position = _end(text) if at_end else (exc.line, exc.column)
        raise FormulaSyntaxError(f"Unexpected {found}; expected {', '.join(expected)}.", position) from None
    except lark.exceptions.UnexpectedEOF:
        raise FormulaSyntaxError("Unexpected end of the formula.", _end(text)) from None
    return _Builder().transform(tree)


def _literal(terminal: str) -> str:
    pattern = _parser().get_terminal(terminal).pattern
    return pattern.value if isinstance(pattern, lark.lexer.PatternStr) else terminal


def _end(text: str) -> Position:
    lines = text.split("\n")
    return (len(lines), len(lines[-1]) + 1)


# ---------------------------------------------------------------------------------------------- printing
def unparse(formula: Formula) -> str:
    """Text that parses back to the same tree: one statement a line, parentheses only where precedence needs them."""
    return "".join(f"{s.name} = {expression(s.value)};\n" for s in formula.statements)


def expression(node: Expr) -> str:
    return _print(node, _CONDITIONAL)


def _print(node: Expr, context: int) -> str:
    """`context` is the least precedence `node` may have unbracketed where it stands."""
    text, precedence = _printed(node)
    return f"({text})" if precedence < context else text


def _printed(node: Expr) -> tuple[str, int]:
    match node:
        case Number(value):
            return _number(value), _POSTFIX
        case String(value):
            return f'"{value}"', _POSTFIX
        case Name(name):
            return name, _POSTFIX
        case Unary(op, operand):
            return op + _print(operand, _UNARY), _UNARY
        case Binary(op, left, right):
            level = PRECEDENCE[op]
            return f"{_print(left, level)} {op} {_print(right, level + 1)}", level
        case Conditional(test, then, otherwise):
            return f"{_print(test, 1)} ? {expression(then)} : {expression(otherwise)}", _CONDITIONAL
        case Call(function, args):
            return f"{function}({_arguments(args)})", _POSTFIX
        case Method(target, method, args):
            return f"{_receiver(target)}.{method}({_arguments(args)})", _POSTFIX
        case Member(target, member):
            return f"{_receiver(target)}.{member}", _POSTFIX
    raise TypeError(f"not a formula expression: {node!r}")


def _receiver(target: Expr) -> str:
    """`5.x` would read as the number `5.` then `x`: a number before a dot goes in parentheses."""
    return f"({expression(target)})" if isinstance(target, Number) else _print(target, _POSTFIX)


def _arguments(args: tuple[Expr, ...]) -> str:
    return ", ".join(expression(arg) for arg in args)


def _number(value: float) -> str:
    """A literal is never negative (that is unary minus); repr round-trips every double."""
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
