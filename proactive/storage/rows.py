"""Typed rows: a dataclass whose fields are stored properties, read and
written back unchanged. storage/delivery_rows.py, campaign_rows.py and
reference_rows.py declare their fields with `stored("propertyName")`; the
functions here map them to and from a Table entity, so rows already stored
read as before and nothing is lost: a property a model does not name stays
in the row's `extra` and is written back as it was read. A field that is
None is a property the row does not have.
"""

from __future__ import annotations

from dataclasses import field, fields
from functools import cache
from typing import Any, Protocol, TypeVar


class Row(Protocol):
    extra: dict[str, Any]  # every property the model does not name, as read


R = TypeVar("R", bound=Row)


def stored(name: str) -> Any:
    """A field stored under the property `name` (None: the row has none)."""
    return field(default=None, metadata={"property": name})


@cache
def properties(cls: type) -> dict[str, str]:
    """The model's stored properties: property name -> field name."""
    return {f.metadata["property"]: f.name for f in fields(cls) if "property" in f.metadata}


def fill(row: R, entity: dict[str, Any], *, skip: tuple[str, ...] = ()) -> R:
    """Set `row`'s stored fields from `entity`; any other property goes to
    `row.extra`, but those in `skip` (read by the model itself)."""
    known = properties(type(row))
    for name, value in entity.items():
        if name in known:
            setattr(row, known[name], value)
        elif name not in skip:
            row.extra[name] = value
    return row


def entity_of(row: Row) -> dict[str, Any]:
    """`row`'s extra properties and its stored fields that are not None."""
    values = {name: getattr(row, attr) for name, attr in properties(type(row)).items()}
    return {**row.extra, **{name: value for name, value in values.items() if value is not None}}
