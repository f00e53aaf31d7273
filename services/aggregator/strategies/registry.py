"""The strategy registry: each strategy is registered with its typed options model (as PEFT registers a
method with its config class), and `make_strategy` validates options against that model.

Registering checks that the model and the constructor agree (the same options, the same defaults, the same
required ones), so a new option cannot be added to one and forgotten in the other.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from services.aggregator.strategies.base import Strategy, StrategyOptions


@dataclass(frozen=True)
class Registered:
    strategy: type[Strategy]
    options: type[StrategyOptions]


_REGISTRY: dict[str, Registered] = {}
STRATEGIES: dict[str, type[Strategy]] = {}  # name -> class, in registration order (docs, CLI choices)


def register_strategy(strategy: type[Strategy], options: type[StrategyOptions] = StrategyOptions) -> None:
    """Register `strategy` under its name with the model of its options."""
    name = strategy.name
    if name in _REGISTRY:
        raise ValueError(f"strategy {name!r} is already registered")
    parameters = {
        key: p
        for key, p in inspect.signature(strategy.__init__).parameters.items()
        if key not in ("self", "args", "kwargs")
    }
    fields = options.model_fields
    if set(parameters) != set(fields):
        raise TypeError(
            f"{name}: constructor options {sorted(parameters)} != {options.__name__} {sorted(fields)}"
        )
    for key, parameter in parameters.items():
        required = parameter.default is inspect.Parameter.empty
        if required != fields[key].is_required() or (
            not required and parameter.default != fields[key].default
        ):
            raise TypeError(f"{name}: option {key!r} has another default in {options.__name__}")
    _REGISTRY[name] = Registered(strategy, options)
    STRATEGIES[name] = strategy


def strategy_options(name: str) -> dict[str, FieldInfo]:
    """The options a strategy accepts (its options model's fields)."""
    return dict(_REGISTRY[name].options.model_fields)


def options_model(name: str) -> type[StrategyOptions]:
    return _REGISTRY[name].options


def takes_option(name: str, option: str) -> bool:
    return name in _REGISTRY and option in _REGISTRY[name].options.model_fields


def validate_options(name: str, options: dict[str, object]) -> StrategyOptions:
    """The options as the strategy's model, or a ValueError naming every unknown, missing or bad option."""
    try:
        registered = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"Unknown strategy {name!r}; available: {', '.join(sorted(_REGISTRY))}") from None
    fields = registered.options.model_fields
    unknown = sorted(set(options) - set(fields))
    missing = sorted(key for key, f in fields.items() if f.is_required() and key not in options)
    if unknown or missing:
        raise ValueError(
            f"{name}: unknown options {unknown}, missing required {missing}; it takes {sorted(fields)}"
        )
    try:
        return registered.options.model_validate(options)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ValueError(f"{name}: invalid options: {problems}") from None


def make_strategy(name: str, **options: object) -> Strategy:
    """A strategy built from validated options (the constructor then checks the values' ranges)."""
    validated = validate_options(name, options)
    strategy = _REGISTRY[name].strategy
    return strategy(**{key: getattr(validated, key) for key in type(validated).model_fields})
