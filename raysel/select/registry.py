"""Selection methods by name, in the manner of timm's `register_model` / `create_model`.

    @register_method("geal")
    class GealMethod(KCenterMethod): ...

    get_method("geal")      # the class; an unknown name fails with the valid ones
    list_methods()          # ["coreset", "geal", "random"]

Future methods (pt4al, uncertainty, typiclust, probcover) register the same way:
subclass `SelectionMethod`, implement `select(config, store, context)`.
"""
from __future__ import annotations

import inspect
import re
from typing import Callable, TypeVar

from raysel.select.base import SelectionMethod
from raysel.select.distances import DISTANCES
from raysel.select.errors import UnknownMethodError

MethodClass = TypeVar("MethodClass", bound=type)

_METHODS: dict[str, type[SelectionMethod]] = {}
_VALID_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def register_method(name: str) -> Callable[[MethodClass], MethodClass]:
    """Class decorator: make a `SelectionMethod` subclass selectable as `--method NAME`.

    Raises:
        ValueError: a malformed name, or one already taken by another class.
        TypeError: not a concrete `SelectionMethod` subclass, or a bad `default_distance`.
    """
    if not isinstance(name, str) or not _VALID_NAME.match(name):
        raise ValueError(f"method names are lowercase identifiers like 'geal' or 'pt4al', got {name!r}")

    def decorator(cls: MethodClass) -> MethodClass:
        if not (inspect.isclass(cls) and issubclass(cls, SelectionMethod)):
            raise TypeError(f"@register_method({name!r}) needs a subclass of SelectionMethod, got {cls!r}")
        if inspect.isabstract(cls):
            missing = ", ".join(sorted(cls.__abstractmethods__))
            raise TypeError(f"{cls.__name__} cannot be registered as {name!r}: it does not implement {missing}")
        if cls.default_distance not in (None, *DISTANCES):
            raise TypeError(f"{cls.__name__}.default_distance must be None or one of {DISTANCES}, got {cls.default_distance!r}")
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(f"method {name!r} is already registered by {_METHODS[name].__qualname__}")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return decorator


def get_method(name: str) -> type[SelectionMethod]:
    """The method class registered as `name`."""
    try:
        return _METHODS[name]
    except KeyError:
        raise UnknownMethodError(f"unknown selection method {name!r}; valid methods: {', '.join(list_methods())}") from None


def create_method(name: str) -> SelectionMethod:
    """An instance of the method registered as `name`."""
    return get_method(name)()


def list_methods() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_METHODS)
