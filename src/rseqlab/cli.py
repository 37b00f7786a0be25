"""The ``rseqlab`` command: a thin shell over the library.

``main()`` is the only place that turns errors into exit codes: a
:class:`~rseqlab.errors.RseqlabError` or a usage error becomes one line on
stderr and its status; anything else is an rseqlab bug and keeps its
traceback.
"""

from __future__ import annotations

import sys

import click

from . import scenarios
from .errors import BadInput, ExitStatus, RseqlabError
from .kernel import PERSONALITIES
from .report import console, dump_json
from .report import explain as explain_report

KERNELS = list(PERSONALITIES)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """rseqlab: what each Linux kernel does for restartable sequences (RSEQ)."""


@cli.command()
@click.argument("scenario", required=False)
@click.option("--kernel", "-k", "kernels", multiple=True, type=click.Choice(KERNELS),
              help="Kernel personality; repeat for a side-by-side view (default: all).")
@click.option("--debug", is_flag=True,
              help="6.18: CONFIG_DEBUG_RSEQ=y; 6.19: the rseq_debug static key on.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--list", "list_only", is_flag=True, help="List the scenarios and exit.")
@click.option("--all", "run_all", is_flag=True, help="Every scenario under every kernel, one line each.")
def explain(scenario: str | None, kernels: tuple[str, ...], debug: bool, as_json: bool,
            list_only: bool, run_all: bool) -> None:
    """Run one scenario of the spec's §4 table on a one-task machine.

    \b
    Examples:
      rseqlab explain --list
      rseqlab explain preempt-in-cs --kernel 6.19
      rseqlab explain fork-child-cow -k 6.18 -k 6.19 --json
    """
    con = console()
    names = list(scenarios.SCENARIOS)
    chosen = list(kernels) or KERNELS
    if list_only:
        if as_json:
            click.echo(dump_json([{"scenario": s.name, "spec_row": s.row, "summary": s.summary}
                                  for s in scenarios.SCENARIOS.values()]))
        else:
            explain_report.render_list(con)
        return
    if run_all:
        rows = [[scenarios.explain(n, k, debug=debug) for k in chosen] for n in names]
        if as_json:
            click.echo(dump_json([r.as_json() for row in rows for r in row]))
        else:
            explain_report.render_matrix(con, rows)
        return
    if scenario is None:
        raise BadInput(f"missing SCENARIO; accepted: {', '.join(names)}")
    results = [scenarios.explain(scenario, k, debug=debug) for k in chosen]
    if as_json:
        payload = results[0].as_json() if len(results) == 1 else [r.as_json() for r in results]
        click.echo(dump_json(payload))
    else:
        explain_report.render(con, results)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status instead of raising."""
    try:
        status = cli.main(args=argv, prog_name="rseqlab", standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _error(exc.format_message().replace("\n", " ") + hint)
        return ExitStatus.BAD_INPUT
    except click.ClickException as exc:
        _error(exc.format_message())
        return exc.exit_code
    except RseqlabError as exc:
        _error(str(exc))
        return exc.status
    except (KeyboardInterrupt, click.Abort):
        _error("interrupted")
        return ExitStatus.INTERRUPTED
    return status if isinstance(status, int) else ExitStatus.SUCCESS


def _error(message: str) -> None:
    print(f"rseqlab: error: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
