"""Options that cannot be combined: refused with one line (exit 2) before a command does anything.

A command declares its conflicts next to its options:

* ``@exclusive("scenario", "list_only", "run_all")``: at most one of these may be given;
* ``@alone("list_only", but=("as_json",))``: when this one is given, no other may be, except
  those named in ``but``.

"Given" means on the command line (or from the environment), whatever the value: ``--seed 0``
with ``--list`` is refused although 0 is the default, since the user asked for something the
command would silently ignore. The declarations are kept on the callback
(:data:`CONFLICTS_ATTR`), so tests and the CLI fuzz can find every command's conflicts without
a list of their own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

import click
from click.core import ParameterSource

from .errors import BadInput

#: Attribute of a command's callback: a list of ("exclusive", names) / ("alone", name, but).
CONFLICTS_ATTR = "__rseqlab_conflicts__"
_GIVEN = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT, ParameterSource.PROMPT)


def display_name(param: click.Parameter) -> str:
    """How the user spells ``param``: its long option (``--list``), or its metavar (``SCENARIO``)."""
    if isinstance(param, click.Option):
        longs = [o for o in param.opts if o.startswith("--")]
        return (longs or param.opts)[0]
    return param.human_readable_name


def given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) in _GIVEN


def _params(ctx: click.Context) -> dict[str, click.Parameter]:
    return {p.name: p for p in ctx.command.params if p.name}


def check_conflicts(ctx: click.Context, rules: Iterable[tuple]) -> None:
    """Raise :class:`BadInput` for the first rule the command line breaks."""
    params = _params(ctx)
    for rule in rules:
        if rule[0] == "exclusive":
            hit = [n for n in rule[1] if given(ctx, n)]
            if len(hit) > 1:
                a, b = (display_name(params[n]) for n in hit[:2])
                raise BadInput(f"{a} and {b} cannot be used together (choose one)")
        else:
            _, name, but = rule
            if given(ctx, name):
                other = [n for n in params if n != name and n not in but and given(ctx, n)]
                if other:
                    raise BadInput(f"{display_name(params[name])} cannot be used with "
                                   f"{display_name(params[other[0]])} (it would be ignored)")


def _declare(rule: tuple) -> Callable:
    def decorate(fn: Callable) -> Callable:
        rules = getattr(fn, CONFLICTS_ATTR, None)
        if rules is None:  # the first (innermost) declaration wraps the function once
            @functools.wraps(fn)
            def checked(*args, **kwargs):
                check_conflicts(click.get_current_context(), getattr(checked, CONFLICTS_ATTR))
                return fn(*args, **kwargs)

            setattr(checked, CONFLICTS_ATTR, [rule])
            return checked
        rules.append(rule)
        return fn

    return decorate


def exclusive(*names: str) -> Callable:
    """At most one of the parameters ``names`` may be given."""
    return _declare(("exclusive", tuple(names)))


def alone(name: str, *, but: tuple[str, ...] = ()) -> Callable:
    """When ``name`` is given, no other parameter may be, except those in ``but``."""
    return _declare(("alone", name, tuple(but)))


def conflicts_of(command: click.Command) -> list[tuple]:
    """The rules a command declared (empty for none)."""
    return list(getattr(command.callback, CONFLICTS_ATTR, None) or [])
