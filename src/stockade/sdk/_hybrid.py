"""Verbs callable on the class with an id or on an instance: ``Sandbox.kill(id)`` and
``sandbox.kill()``, as E2B's SDK offers them."""

from __future__ import annotations

import functools
from typing import Any, Callable


class hybrid:  # noqa: N801 - used like classmethod/property
    """``on_instance(self, ...)`` when reached through an instance, ``on_class(cls, id, ...)``
    when reached through the class."""

    def __init__(self, on_instance: Callable[..., Any], on_class: Callable[..., Any]) -> None:
        self._on_instance = on_instance
        self._on_class = on_class
        self.__doc__ = on_instance.__doc__

    def __get__(self, obj: object, owner: type) -> Callable[..., Any]:
        if obj is None:
            return functools.partial(self._on_class, owner)
        return functools.partial(self._on_instance, obj)
