"""A tiny, escape-by-default template for the HTML pages.

Placeholders are written ``{{name}}``. The template is split once, when it is built, so rendering
is a join of precomputed parts; substituted values are never parsed again, which means a value
that happens to contain ``{{x}}`` stays literal text.

Every value is HTML-escaped (quotes included, so it is safe inside attribute values) unless it is
wrapped in :class:`Raw`, which marks markup that the code itself produced.
"""

from __future__ import annotations

import html
import re

__all__ = ["Raw", "Template"]

_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}")


class Raw(str):
    """Trusted markup, inserted as is. Only wrap text the server wrote, never user input."""

    __slots__ = ()


def _fill(value: str) -> str:
    # quote=True: values also go inside attribute values ("..." and '...').
    return value if isinstance(value, Raw) else html.escape(value, quote=True)


class Template:
    """A text with ``{{name}}`` placeholders; :meth:`render` must be given exactly those names."""

    __slots__ = ("_parts", "names")

    def __init__(self, text: str) -> None:
        # re.split with one group alternates literal, name, literal, name, ..., literal.
        self._parts: tuple[str, ...] = tuple(_PLACEHOLDER.split(text))
        self.names: frozenset[str] = frozenset(self._parts[1::2])

    def render(self, **values: str) -> str:
        """Fill every placeholder, escaping each value that is not :class:`Raw`.

        Raises:
            ValueError: a placeholder has no value, or a value has no placeholder (a typo either
                way would otherwise ship a page with a hole in it).
        """
        given = frozenset(values)
        if given != self.names:
            missing = sorted(self.names - given)
            extra = sorted(given - self.names)
            raise ValueError(f"template values do not match: missing {missing}, unexpected {extra}")
        escaped = {name: _fill(value) for name, value in values.items()}
        parts = list(self._parts)
        for i in range(1, len(parts), 2):
            parts[i] = escaped[parts[i]]
        return "".join(parts)

    def partial(self, **values: str) -> Template:
        """Fill some placeholders now and keep the others for later (used for import-time work).

        Filled-in values are merged into the literal parts, never re-parsed, so a value that
        contains ``{{x}}`` cannot turn into a placeholder.
        """
        unknown = frozenset(values) - self.names
        if unknown:
            raise ValueError(f"template has no placeholder {sorted(unknown)}")
        parts: list[str] = [self._parts[0]]
        for i in range(1, len(self._parts), 2):
            name, literal = self._parts[i], self._parts[i + 1]
            if name in values:
                parts[-1] += _fill(values[name]) + literal
            else:
                parts += [name, literal]
        new = Template.__new__(Template)
        new._parts = tuple(parts)
        new.names = frozenset(parts[1::2])
        return new
