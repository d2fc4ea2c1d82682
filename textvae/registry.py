"""A small registry of named components, and binding of recipe tables to their constructors.

A component is registered under a kind ("model", "encoder", "decoder", ...) and a snake-case
name. A recipe table names it with ``type = "name"``; every other key is bound to the
constructor's signature, type-checked against its annotations, so a misspelled key or a wrong
type fails when the recipe loads, before any data is read. Defaults live only in the signatures.

Parameters that the program supplies (the vocabulary size, the latent size a model hands to its
encoder) are declared as ``context`` when registering and may not appear in a recipe.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

from textvae.errors import TextVAEError


@dataclass(frozen=True)
class Kind:
    """Marks a constructor parameter whose value is itself a component table of this kind."""

    name: str


def ComponentSpec(kind: str):  # noqa: N802 - reads as a type in annotations
    """Annotation for a parameter that takes a nested component table, e.g. ``ComponentSpec("encoder")``."""
    return Annotated[dict, Kind(kind)]


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., Any]
    context: frozenset[str]


_REGISTRY: dict[str, dict[str, _Entry]] = {}


def register(kind: str, name: str, *, context: tuple[str, ...] = ()):
    """Class/function decorator: register ``factory`` as ``kind``/``name``; duplicates are rejected."""

    def decorate(factory):
        table = _REGISTRY.setdefault(kind, {})
        if name in table:
            raise ValueError(f"{kind} {name!r} is registered twice")
        table[name] = _Entry(factory, frozenset(context))
        return factory

    return decorate


def names(kind: str) -> list[str]:
    """The registered names of one kind, sorted."""
    return sorted(_REGISTRY.get(kind, {}))


def _entry(kind: str, spec: Mapping[str, Any], where: str) -> _Entry:
    if not isinstance(spec, Mapping):
        raise TextVAEError(f"{where}: expected a table with a 'type' key, got {type(spec).__name__}")
    name = spec.get("type")
    if name is None:
        raise TextVAEError(f"{where}: missing 'type'; choose one of: {', '.join(names(kind))}")
    table = _REGISTRY.get(kind, {})
    if name not in table:
        raise TextVAEError(f"{where}: unknown {kind} type {name!r}; choose one of: {', '.join(names(kind))}")
    return table[name]


def _parameters(entry: _Entry) -> dict[str, tuple[inspect.Parameter, Any]]:
    target = entry.factory.__init__ if inspect.isclass(entry.factory) else entry.factory
    hints = get_type_hints(target, include_extras=True)
    params = {}
    for p in inspect.signature(entry.factory).parameters.values():
        if p.name in entry.context or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        params[p.name] = (p, hints.get(p.name, Any))
    return params


def validate(kind: str, spec: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check a component table against its constructor; return it with values coerced (int → float)."""
    entry = _entry(kind, spec, where)
    params = _parameters(entry)
    unknown = sorted(set(spec) - set(params) - {"type"})
    if unknown:
        raise TextVAEError(
            f"{where}: unknown key {unknown[0]!r} for {kind} {spec['type']!r}; "
            f"valid keys: {', '.join(['type', *params])}"
        )
    checked: dict[str, Any] = {"type": spec["type"]}
    for name, (param, annotation) in params.items():
        if name in spec:
            checked[name] = check_value(spec[name], annotation, f"{where}.{name}")
        elif param.default is inspect.Parameter.empty:
            raise TextVAEError(f"{where}: missing required key {name!r} for {kind} {spec['type']!r}")
    return checked


def build(kind: str, spec: Mapping[str, Any], where: str = "", **context: Any) -> Any:
    """Construct the component a table names, with ``context`` supplying the program's parameters."""
    where = where or kind
    checked = validate(kind, spec, where)
    entry = _entry(kind, checked, where)
    kwargs = {k: v for k, v in checked.items() if k != "type"}
    accepted = inspect.signature(entry.factory).parameters
    kwargs.update({k: v for k, v in context.items() if k in accepted})
    try:
        return entry.factory(**kwargs)
    except ValueError as err:  # a value the constructor (or torch inside it) rejects, e.g. hidden_dim = 0
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "invalid value"
        raise TextVAEError(f"{where}: {reason}") from None


def check_value(value: Any, annotation: Any, where: str) -> Any:
    """Type-check one recipe value against an annotation; ints are accepted (and cast) for floats."""
    origin = get_origin(annotation)
    if annotation is Any:
        return value
    if origin is Annotated:
        base, *extras = get_args(annotation)
        kind = next((e.name for e in extras if isinstance(e, Kind)), None)
        if kind is not None:
            return validate(kind, value, where)
        return check_value(value, base, where)
    if origin in (typing.Union, types.UnionType):
        options = get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return check_value(value, option, where)
            except TextVAEError as err:
                errors.append(str(err))
        raise TextVAEError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {annotation}")
    if origin is Literal:
        if value not in get_args(annotation):
            choices = ", ".join(repr(c) for c in get_args(annotation))
            raise TextVAEError(f"{where}: {value!r} is not one of {choices}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise TextVAEError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        args = get_args(annotation)
        item_type = args[0] if args else Any
        items = [check_value(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise TextVAEError(f"{where}: expected a table, got {type(value).__name__} {value!r}")
        key_type, value_type = get_args(annotation) or (Any, Any)
        return {check_value(k, key_type, where): check_value(v, value_type, f"{where}.{k}") for k, v in value.items()}
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TextVAEError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TextVAEError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if annotation in (bool, str):
        if not isinstance(value, annotation):
            raise TextVAEError(f"{where}: expected {annotation.__name__}, got {type(value).__name__} {value!r}")
        return value
    raise TypeError(f"{where}: no checker for annotation {annotation!r}")
