"""Typed per-gateway state for plugins: ``gateway.stash[KEY]`` (pytest's ``config.stash``).

A plugin that keeps objects for the life of one gateway (a connection pool, parsed settings,
the sessions to send GOAWAY to on shutdown) declares a module-level ``StashKey[T]`` and keeps
them in ``gateway.stash``: the value goes away with the gateway, several gateways in one
process (tests) do not share it, and ``mypy`` knows its type. No module-level
``WeakKeyDictionary[Gateway, ...]`` is needed.

Lookups are a dict access; still, a per-connection object that needs a stashed value reads it
once (when it is made) and keeps it, rather than asking the stash per packet.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

__all__ = ["Stash", "StashKey"]

T = TypeVar("T")
D = TypeVar("D")


class StashKey(Generic[T]):
    """The key of one value in a :class:`Stash`; it is compared by identity. ``name`` only
    appears in ``repr`` and in the ``KeyError`` of a missing value."""

    __slots__ = ("name",)

    def __init__(self, name: str = "") -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"StashKey({self.name!r})"


class Stash:
    """A map from :class:`StashKey` ``[T]`` to ``T``."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: dict[StashKey[Any], object] = {}

    def __setitem__(self, key: StashKey[T], value: T) -> None:
        self._data[key] = value

    def __getitem__(self, key: StashKey[T]) -> T:
        return cast(T, self._data[key])

    def get(self, key: StashKey[T], default: D) -> T | D:
        try:
            return self[key]
        except KeyError:
            return default

    def setdefault(self, key: StashKey[T], default: T) -> T:
        """The value for ``key``; ``default`` stored and returned when there is none."""
        return cast(T, self._data.setdefault(key, default))

    def get_or_create(self, key: StashKey[T], make: Callable[[], T]) -> T:
        """The value for ``key``, made by ``make()`` and stored on first use."""
        try:
            return cast(T, self._data[key])
        except KeyError:
            v = self._data[key] = make()
            return v

    def pop(self, key: StashKey[T], default: D) -> T | D:
        """Remove and return the value for ``key`` (``default`` when there is none)."""
        return cast("T | D", self._data.pop(key, default))

    def __delitem__(self, key: StashKey[T]) -> None:
        del self._data[key]

    def __contains__(self, key: StashKey[T]) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)
