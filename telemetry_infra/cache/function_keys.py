"""The keys of ``@cached`` calls: which function, which arguments, the same in every process.

A key is ``[key_prefix:]module.qualname:<digest>``. The digest covers

* the function: its code (bytecode, names, constants) and the values of its closure
  variables, read once at decoration. Closures made by one factory therefore get
  different keys when they capture different values, and a deploy that changes the
  function's code starts with fresh entries;
* the arguments, bound to the signature with defaults applied (``f(1)``, ``f(x=1)`` and
  ``f(1, y=<default>)`` are one call).

Values are written in a canonical, typed form, like ``functools.lru_cache(typed=True)``:
``f(1)``, ``f(1.0)`` and ``f(True)`` are separate entries, and so are ``f((1, 2))`` and
``f([1, 2])``; dicts, sets and frozensets are order-insensitive. Enums are keyed by
member, dataclasses by their compared fields, functions by the rule above, an object
with a ``__cache_key__()`` method by what it returns, and other objects by type and
``repr``. No key ever depends on ``id()`` or an address: a value whose ``repr`` is
``object.__repr__`` (or shows ``at 0x...``) raises ``TypeError`` naming the parameter,
since a later object at the same address would get its results.
"""

from __future__ import annotations

import dataclasses
import decimal
import fractions
import hashlib
import inspect
import pathlib
import re
import types
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import date, timedelta, timezone
from enum import Enum
from typing import Any

__all__ = ["FunctionKeys", "function_digest", "stable_repr"]

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")

# exact types whose repr is canonical, names the type and never shows an address (datetime and
# time are not here: their repr includes their tzinfo's, which may)
_SELF_DESCRIBING = frozenset(
    {
        str, int, float, complex, bool, bytes, bytearray, type(None), type(Ellipsis), range, slice,
        date, timedelta, timezone, decimal.Decimal, fractions.Fraction, uuid.UUID,
        pathlib.PurePosixPath, pathlib.PureWindowsPath, pathlib.PosixPath, pathlib.WindowsPath,
    }
)  # fmt: skip
_BUILTIN_BASES = (tuple, list, dict, set, frozenset, str, bytes, int, float)


class _Unstable(Exception):
    """Internal: a value with no stable identity; ``where`` is filled in as it propagates."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.where: list[str] = []

    def path(self, root: str) -> str:
        return root + "".join(reversed(self.where))


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _items(values: Any, opening: str, closing: str) -> str:
    parts = []
    for index, item in enumerate(values):
        try:
            parts.append(stable_repr(item))
        except _Unstable as exc:
            exc.where.append(f"[{index}]")
            raise
    return opening + ",".join(parts) + closing


def _unordered(values: Any, opening: str) -> str:
    parts = []
    for item in values:
        try:
            parts.append(stable_repr(item))
        except _Unstable as exc:
            exc.where.append(f" (an item {item!r:.40})")
            raise
    return opening + ",".join(sorted(parts)) + "}"


def _mapping(mapping: Mapping[Any, Any]) -> str:
    parts = []
    for key, item in mapping.items():
        try:
            parts.append(f"{stable_repr(key)}:{stable_repr(item)}")
        except _Unstable as exc:
            exc.where.append(f"[{key!r:.40}]")
            raise
    return "{" + ",".join(sorted(parts)) + "}"


_CONTAINERS: dict[type, Callable[[Any], str]] = {
    tuple: lambda value: _items(value, "(", ",)"),
    list: lambda value: _items(value, "[", "]"),
    dict: _mapping,
    set: lambda value: _unordered(value, "{"),
    frozenset: lambda value: _unordered(value, "frozenset{"),
}


def stable_repr(value: object) -> str:
    """``value`` in the canonical typed form keys are hashed from; ``_Unstable`` if it has none."""
    cls = value.__class__
    if cls in _SELF_DESCRIBING:
        return repr(value)
    container = _CONTAINERS.get(cls)
    if container is not None:
        return container(value)
    return _object_repr(value, cls)


def _object_repr(value: Any, cls: type[Any]) -> str:
    hook = getattr(cls, "__cache_key__", None)
    if hook is not None:
        try:
            return f"{_type_name(cls)}<{stable_repr(hook(value))}>"
        except _Unstable as exc:
            exc.where.append(".__cache_key__()")
            raise
    if isinstance(value, type):
        return f"class {_type_name(value)}"
    if isinstance(value, Enum):
        return f"{_type_name(cls)}.{value._name_ if value._name_ is not None else repr(value._value_)}"
    if isinstance(value, types.FunctionType):
        return f"function {value.__module__}.{value.__qualname__}#{function_digest(value)}"
    if isinstance(value, types.ModuleType):
        return f"module {value.__name__}"
    if dataclasses.is_dataclass(value):
        return _type_name(cls) + _fields(value)
    for base in _BUILTIN_BASES:
        if isinstance(value, base):  # namedtuple, OrderedDict, str and int subclasses, ...
            encode = _CONTAINERS.get(base)
            return _type_name(cls) + (encode(value) if encode else base.__repr__(value))
    inherited_repr: object = (
        cls.__repr__
    )  # typeshed sees a bound method here; at runtime it is the class's function
    if inherited_repr is object.__repr__:
        raise _Unstable(
            f"{_type_name(cls)} uses object.__repr__, which shows a memory address that a later object "
            "can reuse (it would get this one's results)"
        )
    text = repr(value)
    if address := _ADDRESS.search(text):
        raise _Unstable(
            f"the repr of {_type_name(cls)} shows a memory address ({address.group().strip()}) that a later "
            "object can reuse"
        )
    return f"{_type_name(cls)}#{len(text)}:{text}"


def _fields(value: Any) -> str:
    parts = []
    for field in dataclasses.fields(value):
        if not field.compare:
            continue
        try:
            parts.append(f"{field.name}={stable_repr(getattr(value, field.name))}")
        except _Unstable as exc:
            exc.where.append(f".{field.name}")
            raise
    return "(" + ",".join(parts) + ")"


# -- functions ------------------------------------------------------------------------


def _constant(const: object) -> str:
    if isinstance(const, types.CodeType):
        return _code(const)
    if isinstance(const, frozenset):  # its iteration order changes with PYTHONHASHSEED
        return "frozenset{" + ",".join(sorted(map(_constant, const))) + "}"
    if isinstance(const, tuple):
        return "(" + ",".join(map(_constant, const)) + ",)"
    return repr(const)


def _code(code: types.CodeType) -> str:
    """What a code object does, without line numbers: the same in every process."""
    consts = ",".join(map(_constant, code.co_consts))
    return f"{code.co_code.hex()}|{code.co_names}|{code.co_varnames}|{code.co_freevars}|{consts}"


def function_digest(func: types.FunctionType, *, skip_unstable: bool = False) -> str:
    """A digest of ``func``'s code and closure values; ``_Unstable`` for a closure value without
    a stable identity (left out instead with ``skip_unstable``)."""
    parts = [f"{func.__module__}.{func.__qualname__}", _code(func.__code__)]
    for name, cell in zip(func.__code__.co_freevars, func.__closure__ or (), strict=True):
        try:
            contents = cell.cell_contents
        except ValueError:  # not assigned yet (a recursive function decorated in its factory)
            parts.append(f"{name}=<empty>")
            continue
        if contents is func:
            parts.append(f"{name}=<itself>")
            continue
        try:
            parts.append(f"{name}={stable_repr(contents)}")
        except _Unstable as exc:
            if not skip_unstable:
                exc.where.append(f"{name}")
                raise
            parts.append(f"{name}=<left to key_prefix>")
    return hashlib.blake2b("\n".join(parts).encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _positional_layout(signature: inspect.Signature) -> tuple[tuple[str, ...], dict[int, tuple[Any, ...]]]:
    """Parameter names, and for each count of positional arguments that binds with no
    keywords, the defaults that complete it; empty when the signature is not plain."""
    parameters = list(signature.parameters.values())
    plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(parameter.kind not in plain for parameter in parameters):
        return (), {}
    defaults: dict[int, tuple[Any, ...]] = {}
    for given in range(len(parameters), -1, -1):
        rest = parameters[given:]
        if any(parameter.default is inspect.Parameter.empty for parameter in rest):
            break
        defaults[given] = tuple(parameter.default for parameter in rest)
    return tuple(parameter.name for parameter in parameters), defaults


class FunctionKeys:
    """Builds the keys of one ``@cached`` function's calls (see the module docstring)."""

    __slots__ = ("_defaults", "_function", "_name", "_names", "_signature")

    def __init__(self, func: types.FunctionType, key_prefix: str) -> None:
        self._signature = signature = inspect.signature(func)
        self._names, self._defaults = _positional_layout(signature)
        name = f"{func.__module__}.{func.__qualname__}"
        self._name = f"{key_prefix}:{name}:" if key_prefix else f"{name}:"
        try:
            identity = function_digest(func, skip_unstable=bool(key_prefix))
        except _Unstable as exc:
            variable = exc.path("")
            raise TypeError(
                f"@cached {func.__qualname__}: closure variable '{variable}' cannot tell this function "
                f"apart from others made by the same factory: {exc.reason}. Pass key_prefix= naming "
                f"what '{variable}' stands for (e.g. key_prefix=f'orders:{{tenant}}'), or key_builder=, "
                "or give its type a __cache_key__(self) method returning what identifies it"
            ) from None
        self._function = hashlib.blake2b(identity.encode(), digest_size=16)

    def __call__(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        parts = []
        for name, value in self._bind(args, kwargs):
            try:
                parts.append(f"{name}={stable_repr(value)}")
            except _Unstable as exc:
                raise self._unkeyable(exc.path(name), exc.reason) from None
            except RecursionError:
                raise self._unkeyable(name, "it is nested too deeply or contains itself") from None
        digest = self._function.copy()
        digest.update("\n".join(parts).encode("utf-8", "surrogatepass"))
        return self._name + digest.hexdigest()

    def _bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
        """``(parameter, value)`` in signature order, defaults applied (``Signature.bind``, faster
        for positional calls of plain signatures, which it would bind the same way)."""
        defaults = self._defaults.get(len(args))
        if defaults is not None and not kwargs:
            return zip(self._names, args + defaults, strict=True)
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return bound.arguments.items()

    def _unkeyable(self, argument: str, reason: str) -> TypeError:
        return TypeError(
            f"@cached {self._name.rstrip(':')}: argument '{argument}' cannot be part of a cache key: "
            f"{reason}. Give its type a "
            "__cache_key__(self) method returning what identifies it (or a __repr__ that shows it), "
            "or pass key_builder= to @cached"
        )
