"""The hub's events and actions write their own ``__init__`` (mypyc compiles it; the one dataclass
generates would run interpreted, see core/_events.py): each must set every field, as told or to the
field's default, and stay a frozen value."""

from __future__ import annotations

import dataclasses

import pytest

from piping_server.core import _events

CLASSES = [
    cls
    for cls in vars(_events).values()
    if isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls.__module__ == _events.__name__
]


def test_every_event_and_action_is_here() -> None:
    assert len(CLASSES) >= 18  # (the module's inputs and outputs: a failed import would make this file vacuous)


def _values(fields: tuple[dataclasses.Field[object], ...]) -> dict[str, object]:
    """A value of its own for each field, of the field's type (compiled classes check it)."""
    values: dict[str, object] = {}
    for number, field in enumerate(fields, start=1000):
        if field.type is bool:
            values[field.name] = field.default is not True  # (not the default, where there is one)
        elif field.type is int:
            values[field.name] = number
        elif field.type is tuple:
            values[field.name] = (f"peer-{number}",)
        else:  # a peer (any hashable), or str | None
            values[field.name] = f"value-{number}"
    return values


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_init_sets_every_field_as_told_and_defaults_the_rest(cls: type) -> None:
    fields = dataclasses.fields(cls)
    told = _values(fields)
    event = cls(**told)
    assert {name: getattr(event, name) for name in told} == told
    assert event == cls(**told) and hash(event) == hash(cls(**told))
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(event, fields[0].name, told[fields[0].name])
    required = {
        name: value for name, value in told.items() if cls.__dataclass_fields__[name].default is dataclasses.MISSING
    }
    defaulted = cls(**required)
    for field in fields:
        assert getattr(defaulted, field.name) == required.get(field.name, field.default), field.name
