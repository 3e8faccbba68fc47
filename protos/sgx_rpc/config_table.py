"""Strict reading of a service's TOML configuration, one table at a time.

Invariants:

* a key is taken at most once, with the type or types it may have and the value its absence
  means; a present key of another type is refused, and a boolean is never an integer or a
  number (TOML keeps them apart; Python's ``bool`` is an ``int``, so this is checked first);
* whatever a table still holds when it is finished is an unknown key: :meth:`TomlTable.finish`
  refuses them all at once, each named by its dotted path (``sockets.extra``);
* every refusal raises the error class the component passed in (its own ``ConfigError``) with
  a sentence that starts with the dotted key; nothing else is raised;
* range checks, paths and defaults stay with each component's ``config.py``: this reads no file
  and imports no component.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

_KIND_NAMES: Mapping[type, str] = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "a table",
}


class TomlTable:
    """One TOML table whose keys are consumed one by one; leftovers are unknown keys.

    ``where`` is the table's dotted path (empty for the document itself); ``error`` builds the
    exception to raise from a message, normally the component's ``ConfigError`` class.
    """

    __slots__ = ("_data", "_error", "_where")

    def __init__(
        self, data: Mapping[str, Any], where: str = "", *, error: Callable[[str], Exception]
    ) -> None:
        self._data = dict(data)
        self._where = where
        self._error = error

    def name(self, key: str) -> str:
        """The dotted path of ``key`` in this table, as messages name it."""
        return f"{self._where}.{key}" if self._where else key

    def take(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        """The value of ``key`` (removed from the table), or ``default`` when it is absent."""
        if key not in self._data:
            return default
        value = self._data.pop(key)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self._error(f"{self.name(key)}: expected {_kind_names(kinds)}, got a boolean")
        if not isinstance(value, kinds):
            raise self._error(
                f"{self.name(key)}: expected {_kind_names(kinds)}, got {type(value).__name__}"
            )
        return value

    def table(self, key: str) -> TomlTable | None:
        """The sub-table ``key`` (``None`` when absent); finish it before this one."""
        value = self.take(key, dict, None)
        return None if value is None else TomlTable(value, self.name(key), error=self._error)

    def finish(self) -> None:
        """Refuse every key nobody took."""
        if self._data:
            names = ", ".join(sorted(self.name(k) for k in self._data))
            raise self._error(f"unknown configuration key(s): {names}")


def _kind_names(kinds: tuple[type, ...]) -> str:
    return " or ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)
