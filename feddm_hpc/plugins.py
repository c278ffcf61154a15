"""Import a user's class named by a config field as `package.module:Name` (docs/extending.md).

The config layer checks only the syntax (config/choices.py, IMPORT_PATH); the builders of the
extensible fields (compression.make_compressor, strategies.make_strategy, data.load_dataset,
diffusion.models.build_network, federation.callbacks.user_callbacks) call `load_class` or
`load_function` on every rank and then check the object against their protocol. Plain importlib and getattr, never
eval: a missing module, a missing name or a non-class is a ConfigError naming the field (exit 2).
"""
from __future__ import annotations

import importlib
import inspect

from feddm_hpc.errors import ConfigError


def is_import_path(value) -> bool:
    """`package.module:Name` (a registry name never holds a colon)."""
    return isinstance(value, str) and ":" in value


def load_object(path: str, field: str):
    """The object `path` ('package.module:Name') names, else ConfigError "<field>: ..." naming
    what is wrong (a missing module, a module that fails to import, a missing name)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{field}: {path!r} is not an import path package.module:Name")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and not (module_name + ".").startswith(exc.name + "."):
            # the user's module exists but imports something that does not
            raise ConfigError(f"{field}: importing module {module_name!r} of {path!r} failed: "
                              f"{exc}") from None
        raise ConfigError(f"{field}: cannot import module {module_name!r} of {path!r} "
                          f"({exc}); is its folder on PYTHONPATH on every rank?") from None
    except ConfigError:
        raise
    except Exception as exc:  # the user's module failed while importing
        raise ConfigError(f"{field}: importing module {module_name!r} of {path!r} failed: "
                          f"{type(exc).__name__}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{field}: module {module_name!r} has no name {attr!r}") from None


def load_class(path: str, field: str, base: type) -> type:
    """The class `path` ('package.module:Name') names: a concrete subclass of `base`, else
    ConfigError "<field>: ..." naming what is wrong."""
    obj = load_object(path, field)
    where = f"{base.__module__}.{base.__qualname__}"
    if not (isinstance(obj, type) and issubclass(obj, base)):
        got = f"class {obj.__module__}.{obj.__qualname__}" if isinstance(obj, type) \
            else f"a {type(obj).__name__}"
        raise ConfigError(f"{field}: {path!r} is not a subclass of {where} (got {got})")
    if obj is base or inspect.isabstract(obj):
        missing = ", ".join(sorted(getattr(obj, "__abstractmethods__", ()))) or "the interface"
        raise ConfigError(f"{field}: {path!r} does not implement {missing} of {where}")
    return obj


def load_function(path: str, field: str, params: tuple) -> object:
    """The callable `path` names that takes the positional arguments `params` (their names are
    for the message), else ConfigError "<field>: ..."."""
    obj = load_object(path, field)
    wanted = f"({', '.join(params)})"
    if not callable(obj) or isinstance(obj, type):
        raise ConfigError(f"{field}: {path!r} is not a function taking {wanted} "
                          f"(got a {type(obj).__name__})")
    try:
        inspect.signature(obj).bind(*params)
    except TypeError:
        raise ConfigError(f"{field}: {path!r} does not take the arguments {wanted}") from None
    except ValueError:   # no signature (a builtin): trust the call
        pass
    return obj
