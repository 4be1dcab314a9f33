"""Typed configurations whose fields are the project's parameters, declared once.

Every parameter of an experiment is one field of a frozen dataclass, declared with
:func:`param`: its name, type, default, a one-line help text, and optionally its allowed
values (``choices``), a range check, and whether it is a *runtime* field (where or how to run,
not what is computed). Every entry point sets parameters by these names and through this module:

* a notebook's ``parameters`` cell and papermill's injected cell (:mod:`conelib.tools.nbparams`),
* ``conelib run NOTEBOOK -p NAME VALUE`` and ``conelib params EXPERIMENT`` (:mod:`conelib.tools.cli`),
* a profile (``conelib/profiles/<name>.yaml``) and a sweep grid (:mod:`conelib.sweep`),
* Python: ``KernelDynamicsConfig(lr=0.05, steps=2000)``.

Sections. A configuration may hold another configuration as a field (a *section*: the run
config holds its :class:`conelib.train.TrainConfig` as ``train``). Parameters are still
addressed by their flat name (``lr``, not ``train.lr``): the names of all leaves are unique, so
``KernelDynamicsConfig(lr=0.05)`` sets ``cfg.train.lr``, and ``cfg.lr`` reads it.

Values are *coerced* from what people type (Zhou et al. do not need this; users do): a string
from papermill's ``-p`` or a YAML file is parsed for numeric, boolean and list fields
(``"1e-3"`` -> ``0.001``, which YAML 1.1 would leave a string; ``"[10, 20]"`` -> ``(10, 20)``),
an integer-valued float is accepted for an integer field (``10.0`` -> ``10``), an int for a float
field (``0`` -> ``0.0``), lists become tuples, and set-like tuples (``unique=True``) are sorted
without duplicates, so that equal configurations compare and hash equal. A boolean is read the
same way from every entry point: ``True``/``False``, ``true``/``false``, ``yes``/``no``,
``on``/``off`` (any case; what YAML 1.1 reads as booleans, so a profile, ``-p`` and papermill's
``-p`` agree) and ``1``/``0``; a float must be finite (``nan`` and ``inf`` are refused as such). Anything else is a
:class:`ParameterError` that names the parameter, says what is allowed and, for an unknown name,
lists the valid ones.

Identity (after open_lth's rule): :meth:`Config.identity` holds the fields that are *not* runtime
fields and *not* at their default, by flat name. Adding a parameter with a default therefore
keeps every stored result's name (:func:`conelib.results.config_hash` of the identity).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import numbers
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from conelib.yamlio import safe_load

import numpy as np

__all__ = ["Config", "Param", "ParameterError", "param", "parameters", "coerce", "parse_text", "unknown_names_error",
           "absolute_paths", "absolute_path", "values_equal"]

C = TypeVar("C", bound="Config")


class ParameterError(ValueError):
    """A parameter has a bad name or value. The message names the parameter and what is allowed.

    Attributes:
        name: the parameter's (flat) name.
    """

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(message)

    def __reduce__(self) -> tuple:  # survives pickling (Dask, process pools)
        return (type(self), (self.name, str(self)))


def param(
    default: Any = MISSING,
    help: str = "",
    *,
    choices: Sequence[Any] | None = None,
    check: Callable[[Any], bool] | None = None,
    allowed: str = "",
    runtime: bool = False,
    unique: bool = False,
    is_path: bool = False,
    default_factory: Callable[[], Any] | Any = MISSING,
) -> Any:
    """A dataclass field that is a parameter.

    Args:
        default: the default value.
        help: what the parameter does (shown by ``conelib params`` and in notebooks).
        choices: the allowed values (checked after coercion).
        check: a predicate on the coerced value (``None`` always passes it) ...
        allowed: ... and the words for what it allows, e.g. ``"a number > 0"``.
        runtime: where/how to run, not what is computed: left out of the identity.
        unique: a set-like tuple: stored sorted, without duplicates.
        is_path: a file-system path: a relative one is made absolute where it enters (see
            :func:`absolute_paths`), so it means the same in every process that reads it.
        default_factory: for a section (a nested :class:`Config`).
    """
    meta = {"help": help, "choices": None if choices is None else tuple(choices), "check": check,
            "allowed": allowed, "runtime": runtime, "unique": unique, "is_path": is_path}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Param:
    """One parameter: a leaf field of a configuration, addressed by its flat ``name``.

    ``path`` is the section it lives in (``()`` for the top level, ``("train",)`` for the training
    section); ``type`` the resolved type hint.
    """

    name: str
    type: Any
    default: Any
    help: str
    path: tuple[str, ...]
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any], bool] | None = None
    allowed: str = ""
    runtime: bool = False
    unique: bool = False
    is_path: bool = False

    def describe(self) -> str:
        """``type = default  help [choices]`` in one line (``conelib params``)."""
        extra = f" (one of {list(self.choices)})" if self.choices else (f" ({self.allowed})" if self.allowed else "")
        run = " [runtime: not part of the result's identity]" if self.runtime else ""
        return f"{_type_name(self.type)} = {self.default!r}: {self.help}{extra}{run}"


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Config)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.cache
def parameters(cls: type[Config]) -> dict[str, Param]:
    """Every parameter of ``cls`` by flat name, in declaration order (sections expanded in place).

    Raises:
        TypeError: two leaves share a name (flat names must be unique).
    """
    out: dict[str, Param] = {}
    for f, tp in _own_fields(cls):
        if _is_section(tp):
            # a section's defaults are those of its default instance (a subclass may declare the
            # section again with other defaults, e.g. a longer run)
            base = f.default_factory().flat() if f.default_factory is not MISSING else {}
            for name, p in parameters(tp).items():
                if name in out:
                    raise TypeError(f"{cls.__name__}: parameter {name!r} is declared twice")
                out[name] = dataclasses.replace(p, path=(f.name, *p.path), default=base.get(name, p.default))
            continue
        if f.name in out:
            raise TypeError(f"{cls.__name__}: parameter {f.name!r} is declared twice")
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else MISSING)
        m = f.metadata
        out[f.name] = Param(f.name, tp, default, m.get("help", ""), (), m.get("choices"), m.get("check"),
                            m.get("allowed", ""), bool(m.get("runtime", False)), bool(m.get("unique", False)),
                            bool(m.get("is_path", False)))
    return out


def _own_fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    hints = _hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


# --------------------------------------------------------------------------------------------
# coercion
# --------------------------------------------------------------------------------------------


def parse_text(text: str) -> Any:
    """A value typed as text, read as YAML 1.2 would (``1e-3`` is a number)."""
    try:
        return safe_load(text)
    except Exception:  # noqa: BLE001 - not YAML: keep the text, the type check says what is wrong
        return text


def _fail(p: Param | str, value: Any, allowed: str) -> ParameterError:
    name = p.name if isinstance(p, Param) else p
    return ParameterError(name, f"parameter {name!r} must be {allowed}; got {value!r}")


def _coerce_to(tp: Any, value: Any, name: str) -> Any:
    """``value`` as type ``tp``; ``ParameterError`` naming ``name`` if it cannot be one."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.strip().lower() in ("none", "null", "~") and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce_to(arg, value, name)
            except ParameterError as err:
                errors.append(err)
        raise _fail(name, value, " or ".join(_type_words(a) for a in args))
    if origin is tuple:
        args = typing.get_args(tp)
        item = args[0] if args else Any
        if isinstance(value, str):
            value = parse_text(value)
        if isinstance(value, (numbers.Real, np.generic)) and not isinstance(value, (bool, np.bool_)):
            value = [value]  # one value for a list parameter (papermill's -p seeds 3)
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable) or isinstance(value, Mapping):
            raise _fail(name, value, f"a list of {_plural_words(item)}")
        try:
            return tuple(_coerce_to(item, v, name) for v in value)
        except ParameterError:
            raise _fail(name, value, f"a list of {_plural_words(item)}") from None
    if tp is Any:
        return value
    if tp is bool:
        return _coerce_bool(value, name)
    if tp is int:
        if isinstance(value, str):
            value = parse_text(value)
        if isinstance(value, (bool, np.bool_)):
            raise _fail(name, value, "an integer")
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real) and math.isfinite(float(value)) and float(value).is_integer():
            return int(value)
        raise _fail(name, value, "an integer")
    if tp is float:
        if isinstance(value, str):
            value = parse_text(value)
            if isinstance(value, str) and value.strip().lower().lstrip("+-") in _NON_FINITE:
                value = float(value)  # "nan", "inf": numbers, refused below for not being finite
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise _fail(name, value, "a number")
        if not math.isfinite(float(value)):
            raise _fail(name, value, "a finite number")
        return float(value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _fail(name, value, "a string")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise _fail(name, value, f"a {tp.__name__}")
    return value


#: the one reading of booleans at every entry point (``-p``, papermill, YAML files, Python): the
#: words PyYAML reads as booleans, and 1/0; case does not matter
TRUE_WORDS: tuple[str, ...] = ("true", "yes", "on", "1")
FALSE_WORDS: tuple[str, ...] = ("false", "no", "off", "0")
_BOOL_WORDS = "True or False (also true/false, yes/no, on/off, 1/0)"
_NON_FINITE = ("nan", "inf", "infinity")


def _coerce_bool(value: Any, name: str) -> bool:
    """A boolean as people type it: ``True``/``False``, one of :data:`TRUE_WORDS` /
    :data:`FALSE_WORDS` (any case), or the integers 1 and 0. Anything else is refused."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (numbers.Integral, np.integer)) and int(value) in (0, 1):
        return bool(int(value))
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
    raise _fail(name, value, _BOOL_WORDS)


def _plural_words(tp: Any) -> str:
    """``integers``, ``numbers``, ...: what a list of ``tp`` holds."""
    return {int: "integers", float: "numbers", bool: "booleans", str: "strings"}.get(tp, f"{_type_name(tp)} values")


def _type_words(tp: Any) -> str:
    return {int: "an integer", float: "a number", bool: "True or False", str: "a string",
            type(None): "None"}.get(tp, _type_name(tp))


def coerce(p: Param, value: Any) -> Any:
    """``value`` coerced to ``p``'s type, de-duplicated when set-like, and checked.

    Raises:
        ParameterError: naming ``p`` and what it allows.
    """
    v = _coerce_to(p.type, value, p.name)
    if p.unique and isinstance(v, tuple):
        v = tuple(sorted(set(v)))
    if p.choices is not None and v not in p.choices:
        raise ParameterError(p.name, f"parameter {p.name!r} must be one of {list(p.choices)}; got {value!r}")
    if p.check is not None and v is not None:
        try:
            ok = bool(p.check(v))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise _fail(p, value, p.allowed or "valid")
    return v


def absolute_paths(values: Mapping[str, Any], params: Mapping[str, Param],
                   base: str | os.PathLike | None = None) -> dict[str, Any]:
    """``values`` with every relative path of a path parameter (``Param.is_path``) made absolute
    against ``base`` (default: the current working directory); ``~`` is expanded. Other values,
    ``None`` and names that are not parameters are left as they are.

    Every entry point calls this where a path enters (the command line, papermill's injected
    cell, a profile or grid file with its own folder as ``base``), so that a path means the same
    in a notebook's kernel, which runs in ``notebooks/``, as where it was typed.
    """
    out = dict(values)
    for key, value in values.items():
        p = params.get(key)
        if p is None or not p.is_path or not isinstance(value, (str, os.PathLike)) or not str(value).strip():
            continue
        out[key] = absolute_path(value, base)
    return out


def absolute_path(value: str | os.PathLike, base: str | os.PathLike | None = None) -> str:
    """``value`` (``~`` expanded) if absolute, else ``base / value`` (default base: the current
    working directory), as a string."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    return str(Path(base if base is not None else os.getcwd()).expanduser().absolute() / path)


def unknown_names_error(unknown: Iterable[str], valid: Iterable[str], where: str) -> ParameterError:
    """The error for names that are not parameters: the closest valid names, and all of them."""
    unknown, valid = sorted(unknown), sorted(valid)
    hints = []
    for u in unknown:
        close = difflib.get_close_matches(u, valid, n=1)
        if close:
            hints.append(f"{u!r} (did you mean {close[0]!r}?)")
        else:
            hints.append(repr(u))
    return ParameterError(unknown[0], f"unknown parameter(s) {', '.join(hints)} for {where}; valid: {valid}")


# --------------------------------------------------------------------------------------------
# the base class
# --------------------------------------------------------------------------------------------


class Config:
    """Base of the frozen configuration dataclasses (declare them ``@dataclass(frozen=True,
    init=False)``): construction by flat parameter names, coercion and checks on every field,
    flat read access to sections, and the identity that names stored results.

    Subclasses may define ``__post_init__`` for checks across fields; it runs after every field
    is set and checked.
    """

    #: used in messages ("for KernelDynamicsConfig")
    LABEL: ClassVar[str] = ""

    def __init__(self, **kwargs: Any) -> None:
        cls = type(self)
        flat = parameters(cls)
        own = _own_fields(cls)
        own_names = {f.name for f, _ in own}
        unknown = [k for k in kwargs if k not in flat and k not in own_names]
        if unknown:
            raise unknown_names_error(unknown, flat, cls.label())
        for f, tp in own:
            if _is_section(tp):
                base = kwargs.get(f.name)
                if base is None:
                    base = f.default_factory() if f.default_factory is not MISSING else tp()
                elif isinstance(base, Mapping):
                    base = tp(**base)
                elif not isinstance(base, tp):
                    raise ParameterError(f.name, f"{f.name} must be a {tp.__name__} or a mapping; got {base!r}")
                changes = {k: kwargs[k] for k in parameters(tp) if k in kwargs}
                value = base.replace(**changes) if changes else base
            else:
                p = flat[f.name]
                raw = kwargs[f.name] if f.name in kwargs else p.default
                if raw is MISSING:
                    raise ParameterError(f.name, f"parameter {f.name!r} is required for {cls.label()}")
                value = coerce(p, raw)
            object.__setattr__(self, f.name, value)
        post = getattr(self, "__post_init__", None)
        if post is not None:
            post()

    @classmethod
    def label(cls) -> str:
        return cls.LABEL or cls.__name__

    def __getattr__(self, name: str) -> Any:
        # flat read access to the parameters of sections (cfg.lr is cfg.train.lr)
        if name.startswith("__") or name in ("train",):
            raise AttributeError(name)
        for f, tp in _own_fields(type(self)):
            if _is_section(tp) and name in parameters(tp):
                return getattr(object.__getattribute__(self, f.name), name)
        raise AttributeError(f"{type(self).__name__} has no parameter {name!r}")

    # -- building ------------------------------------------------------------------------------

    @classmethod
    def from_mapping(cls: type[C], mapping: Mapping[str, Any], *, where: str = "") -> C:
        """Build from flat parameter names; unknown names and bad values raise
        :class:`ParameterError` (``where`` says where the mapping came from, for the message)."""
        try:
            return cls(**dict(mapping))
        except ParameterError as err:
            if where and where not in str(err):
                raise ParameterError(err.name, f"{err} (in {where})") from None
            raise

    @classmethod
    def from_result(cls: type[C], ds: Any) -> C:
        """The configuration a stored result records (its ``attrs``): the full configuration when
        the file has it, else its identity (the fields that differed from the defaults when it was
        computed, read with today's defaults; ``conelib migrate-results`` stamps the full one).
        Recorded fields this class no longer has are left out."""
        import json

        attrs = getattr(ds, "attrs", ds)
        text = attrs.get("config_full_json") or attrs.get("config_json")
        if not text or text == "none":
            raise ValueError("the result records no configuration (no config_full_json or config_json attribute)")
        names = cls.parameters()
        return cls.from_mapping({k: v for k, v in json.loads(text).items() if k in names})

    @classmethod
    def parameters(cls) -> dict[str, Param]:
        """Every parameter by flat name (see :func:`parameters`)."""
        return parameters(cls)

    def replace(self: C, **changes: Any) -> C:
        """A copy with the given parameters (flat names) changed."""
        own = {f.name: getattr(self, f.name) for f, _ in _own_fields(type(self))}
        return type(self)(**{**own, **changes})

    # -- reading -------------------------------------------------------------------------------

    def flat(self) -> dict[str, Any]:
        """Every parameter's value by flat name."""
        out: dict[str, Any] = {}
        for f, tp in _own_fields(type(self)):
            value = getattr(self, f.name)
            if _is_section(tp):
                out.update(value.flat())
            else:
                out[f.name] = value
        return out

    def identity(self) -> dict[str, Any]:
        """What determines the result: every non-runtime parameter that is not at its default."""
        params = parameters(type(self))
        return {k: v for k, v in self.flat().items() if not params[k].runtime and v != params[k].default}

    def full(self) -> dict[str, Any]:
        """Every non-runtime parameter, defaults included: what a stored result records of itself
        beside its identity, so that the file says what it is and a changed default is caught."""
        params = parameters(type(self))
        return {k: v for k, v in self.flat().items() if not params[k].runtime}

    def runtime(self) -> dict[str, Any]:
        """The runtime parameters (where/how to run) and their values."""
        params = parameters(type(self))
        return {k: v for k, v in self.flat().items() if params[k].runtime}


def values_equal(a: Any, b: Any) -> bool:
    """Two parameter values are the same: numbers compared as numbers (to 1e-12 relative), lists and
    tuples element by element (``None`` as an empty list), ``None`` only equal to ``None``, anything
    else as text."""
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        xs, ys = list(a or []), list(b or [])
        return len(xs) == len(ys) and all(values_equal(x, y) for x, y in zip(xs, ys))
    if a is None or b is None:
        return a is None and b is None
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    except (TypeError, ValueError):
        return str(a) == str(b)
