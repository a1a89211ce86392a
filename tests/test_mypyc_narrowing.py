"""A hazard of the compiled modules: an attribute mypy has narrowed to ``None`` stays narrowed across a call.

mypy keeps ``self.x`` narrowed after ``self.x = None`` (or inside ``if self.x is None:``) even when a call in
between sets it again; mypyc compiles that narrowing into a run-time check, so a later ``self.x is None``
raises ``TypeError: None object expected`` where Python would have answered False. It once cost a traceback
each time a busy HTTP/2 connection yielded its turn (``Http2Protocol._feed_backlog``). The fix is to ask
through a method (``_has_backlog()``) or a local read after the call. This test reads the compiled modules'
sources for the pattern: set or tested to None, then a call, then tested again, in one function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import piping_server
from piping_server._compiled import COMPILED_MODULES

SOURCES = Path(piping_server.__file__).parent.parent


def _self_attribute(node: ast.AST) -> str | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return node.attr
    return None


def _is_none(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _narrowed_to_none(node: ast.AST) -> list[str]:
    """The attributes this node narrows to None from here on: ``self.x = None`` (also in a tuple assignment)."""
    if not isinstance(node, ast.Assign):
        return []
    names = []
    for target in node.targets:
        pairs = (
            zip(target.elts, node.value.elts, strict=False)
            if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple)
            else [(target, node.value)]
        )
        names += [name for element, value in pairs if (name := _self_attribute(element)) and _is_none(value)]
    return names


def _tested_against_none(node: ast.AST) -> str | None:
    if (
        isinstance(node, ast.Compare)
        and len(node.ops) == 1
        and isinstance(node.ops[0], ast.Is | ast.IsNot)
        and _is_none(node.comparators[0])
    ):
        return _self_attribute(node.left)
    return None


def _scan(nodes: list[ast.AST], narrowed: dict[str, int], filename: str) -> list[str]:
    """Walk ``nodes`` in source order from the narrowings given (attribute -> line); what is found."""
    found = []
    called_after: dict[str, int] = {}  # attribute -> line of the first call since its narrowing
    for node in sorted(nodes, key=lambda node: (getattr(node, "lineno", 0), getattr(node, "col_offset", 0))):
        if isinstance(node, ast.Assign):
            to_none = _narrowed_to_none(node)
            for target in node.targets:
                for element in target.elts if isinstance(target, ast.Tuple) else [target]:
                    name = _self_attribute(element)
                    if name:
                        narrowed.pop(name, None)
                        called_after.pop(name, None)
            for name in to_none:
                narrowed[name] = node.lineno
        elif isinstance(node, ast.Call):
            for name in narrowed:
                called_after.setdefault(name, node.lineno)
        tested = _tested_against_none(node)
        if tested is not None and tested in called_after and isinstance(node, ast.expr):
            found.append(
                f"{filename}:{node.lineno}: self.{tested} narrowed to None at line {narrowed[tested]}, "
                f"then a call at line {called_after[tested]}"
            )
    return found


def hazards(source: str, filename: str) -> list[str]:
    """Where ``self.x`` is narrowed to None (``self.x = None``, or in the body of ``if self.x is None:``), a call
    follows, and ``self.x`` is then tested against None."""
    found = []
    for function in ast.walk(ast.parse(source, filename)):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        inside = [node for node in ast.walk(function) if hasattr(node, "lineno") and node is not function]
        found += _scan(inside, {}, filename)
        for branch in inside:
            if (
                isinstance(branch, ast.If)
                and (name := _tested_against_none(branch.test))
                and isinstance(branch.test, ast.Compare)
                and isinstance(branch.test.ops[0], ast.Is)
            ):
                body = [node for statement in branch.body for node in ast.walk(statement) if hasattr(node, "lineno")]
                found += _scan(body, {name: branch.lineno}, filename)
    return sorted(set(found))


def test_no_attribute_is_tested_against_none_across_a_call_in_compiled_modules() -> None:
    found = []
    for name in COMPILED_MODULES:
        path = SOURCES / Path(*name.split(".")).with_suffix(".py")
        found += hazards(path.read_text(), str(path.relative_to(SOURCES)))
    assert not found, "\n".join(found)


def test_the_check_sees_the_pattern_it_is_for() -> None:
    fed_again = """
class Connection:
    def feed_backlog(self) -> None:
        backlog, self.backlog = self.backlog, None
        self.feed(backlog)
        if self.backlog is None:
            self.release()
"""
    assert hazards(fed_again, "example.py") == [
        "example.py:6: self.backlog narrowed to None at line 4, then a call at line 5"
    ]
    asked_through_a_method = fed_again.replace("if self.backlog is None:", "if not self.has_backlog():")
    assert hazards(asked_through_a_method, "example.py") == []
