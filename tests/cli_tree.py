"""The CLI's commands and options, read from click's own tree (so tests follow the CLI's changes)."""

from __future__ import annotations

from collections.abc import Iterator

import click

from rseqlab.cli import cli


def commands(group: click.Group = cli, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command as (path of names, command): groups themselves included."""
    for name in sorted(group.commands):
        cmd = group.commands[name]
        yield (*path, name), cmd
        if isinstance(cmd, click.Group):
            yield from commands(cmd, (*path, name))


def spelling(param: click.Parameter) -> str:
    """The option as typed (its first long spelling), or "" for an argument."""
    if isinstance(param, click.Option):
        longs = [o for o in param.opts if o.startswith("--")]
        return (longs or param.opts)[0]
    return ""


def valid_value(param: click.Parameter) -> str:
    """A value click's type conversion accepts for ``param`` (what the command does with it aside)."""
    t = param.type
    if isinstance(t, click.Choice):
        return str(t.choices[0])
    if isinstance(t, (click.types.IntParamType, click.types.IntRange)):
        return "1"
    if isinstance(t, (click.types.FloatParamType, click.types.FloatRange)):
        return "1.5"
    if isinstance(t, click.Path):
        return "out.svg"  # a name every path option's own check accepts (--plot wants .png or .svg)
    default = param.default if not callable(param.default) else None
    if isinstance(default, str) and default:
        return default
    return "x"


def giving(param: click.Parameter) -> list[str]:
    """Argument-vector words that give ``param`` once, with a valid value."""
    if isinstance(param, click.Argument):
        return [valid_value(param)]
    if isinstance(param, click.Option) and (param.is_flag or param.count):
        return [spelling(param)]
    return [spelling(param), valid_value(param)]
