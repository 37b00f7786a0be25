"""The ``rseqlab`` command: a thin shell over :mod:`rseqlab.api`.

Each command parses its options, calls the api function of its operation and renders what it
returns (tables, ``--json``, plots, timeline files); ``tests/test_cli_thin.py`` keeps it so.

``main()`` is the only place that turns errors into exit codes: a
:class:`~rseqlab.errors.RseqlabError` or a usage error becomes one line on
stderr and its status, as does an ``OSError`` about a named file (a path the
system refuses) and SIGTERM/SIGHUP (128 + the signal's number); anything else
is an rseqlab bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys

from . import _startup

_previous_handlers = _startup.guard()  # released at the end of this module

import click  # noqa: E402

from . import api, extras, fanout, scenarios
from .cli_conflicts import alone, exclusive, given
from .errors import BadInput, ExitStatus, RseqlabError, Terminated, command_status
from .fanout import Fanout, parse_seeds
from .kernel import PERSONALITIES, kernel_names
from .report import ascii_fallback, console, json_document
from .report import explain as explain_report
from .report.formats import format_option as _format_option

KERNELS = list(PERSONALITIES)
ARCH_HELP = "Architecture the kernels are built for: x86_64 (default) or arm64 (see docs/architectures.md)."


def _arch_option(fn):
    """``--arch``: every command that takes a kernel takes it (issue 13)."""
    return click.option("--arch", "arch", default=None, help=ARCH_HELP)(fn)


def _fanout_options(fn):
    """``--jobs`` and ``--scheduler``: where independent runs go (``rseqlab.fanout``, docs/scale.md)."""
    fn = click.option("--scheduler", metavar="ADDRESS", default=None,
                      help="Run on a Dask cluster, e.g. tcp://HOST:8786 (default: $RSEQLAB_SCHEDULER).")(fn)
    return click.option("--jobs", "-j", type=int, default=None,
                        help="Local worker processes (default: the usable cores; 1: this process). "
                             "Results are identical for any number.")(fn)


def _plot_option(help_text: str):
    """``--plot FILE``: the chart's path is checked when the command line is read, before a long run."""
    def check(_ctx, _param, value: str | None) -> str | None:
        if value is not None:
            extras.require("plot", "--plot")  # one line naming the extra, before a long run
            from .report.plot import check_plot_path

            check_plot_path(value)  # BadInput: wrong suffix or no such directory
        return value

    return click.option("--plot", type=click.Path(dir_okay=False), callback=check, help=help_text)


def _on_arch(names: list[str], arch: str | None) -> list[str]:
    """The kernel names as the machinery spells them on ``arch`` (x86_64: unchanged).

    Without ``--arch`` a name keeps the architecture it names (``6.19@arm64``), else x86_64.
    """
    from .kernel import arch_by_name, with_arch

    if arch is None:
        return names
    a = arch_by_name(arch)  # BadInput naming the accepted architectures
    return [with_arch(n, a) for n in names]


DEFAULT_PAIR = api.DEFAULT_PAIR
_LEGACY_KERNELS = "rseqlab.legacy_kernels"


_LIST_KERNELS = "rseqlab.list_kernels"


def _kernel_option(help_text: str):
    """``-k/--kernel``: one way to name kernels on every command, repeatable and accepting comma lists,
    with ``--list-kernels`` beside it.

    ``--kernels`` (the old comma-list option of compare, replay and validate) stays as a hidden alias.
    """
    def keep(key: str):
        def callback(ctx: click.Context, _param, value) -> None:
            ctx.meta[key] = value
        return callback

    def decorate(fn):
        @functools.wraps(fn)
        def command(*args, **kwargs):
            ctx = click.get_current_context()
            if ctx.meta.get(_LIST_KERNELS):
                _on_arch([], kwargs.get("arch"))  # BadInput naming the accepted architectures
                return _print_kernels(bool(kwargs.get("as_json")))
            return fn(*args, **kwargs)

        command = click.option("--list-kernels", is_flag=True, expose_value=False, callback=keep(_LIST_KERNELS),
                               help="List the kernels and what-if variants and exit.")(command)
        command = click.option("--kernels", multiple=True, hidden=True, expose_value=False,
                               callback=keep(_LEGACY_KERNELS), help="Deprecated alias of -k/--kernel.")(command)
        return click.option("--kernel", "-k", "kernels", multiple=True, metavar="KERNEL[,KERNEL...]",
                            help=help_text + " Repeat -k or give a comma list.")(command)
    return decorate


def _print_kernels(as_json: bool) -> int:
    """``--list-kernels``: every accepted kernel name with its one-line summary."""
    from .kernel import kernel_summary
    from .report.check import render_kernels

    rows = [(name, kernel_summary(name)) for name in kernel_names()]
    click.echo(json_document("kernel-list", dict(rows), key="kernels") if as_json else render_kernels(rows))
    return ExitStatus.SUCCESS


def _kernel_list(values: tuple[str, ...], arch: str | None, default: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The kernels named by ``-k`` (and the legacy ``--kernels``) in order, each once, checked, on ``arch``."""
    from .kernel import kernel_class

    ctx = click.get_current_context(silent=True)
    given = [*values, *((ctx.meta.get(_LEGACY_KERNELS) or ()) if ctx is not None else ())]
    names = list(dict.fromkeys(k.strip() for v in given for k in v.split(",") if k.strip()))
    if given and not names:
        raise BadInput("-k/--kernel needs a kernel name, e.g. -k 6.19 or -k 6.18,6.19")
    names = _on_arch(names or list(default), arch)
    for name in names:
        kernel_class(name)  # BadInput naming the accepted kernels
    return names


def _timeline_options(fn):
    """``--perfetto OUT`` and ``--chrome OUT``: the run's timeline (docs/export.md)."""
    fn = click.option("--chrome", "chrome_out", type=click.Path(dir_okay=False),
                      help="Also write the run's timeline as Chrome trace-event JSON.")(fn)
    return click.option("--perfetto", "perfetto_out", type=click.Path(dir_okay=False),
                        help="Also write the run's timeline as a Perfetto trace (every exit to user).")(fn)


def _check_timeline_outputs(perfetto_out: str | None, chrome_out: str | None) -> None:
    if perfetto_out is None and chrome_out is None:
        return  # nothing to check, and the recorder's module (numba) stays unimported
    from .trace.record import check_output

    for option, path in (("--perfetto", perfetto_out), ("--chrome", chrome_out)):
        if path is not None:
            check_output(path, option, "timeline file")


def _write_timeline(tl, perfetto_out: str | None, chrome_out: str | None) -> None:
    from .export import write_chrome, write_perfetto

    for out, write in ((perfetto_out, write_perfetto), (chrome_out, write_chrome)):
        if out:
            size = write(tl, out)
            click.echo(f"wrote {out} ({size:,} bytes, {len(tl.tracks)} tracks)", err=True)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rseqlab")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), "--version", "-V", prog_name="rseqlab",
                      message="%(prog)s %(version)s", help="Print the version and exit.")
def cli() -> None:
    """rseqlab: what each Linux kernel does for restartable sequences (RSEQ)."""


@cli.command()
@_format_option
@exclusive("scenario", "list_only", "run_all")
@alone("list_only", but=("as_json", "arch"))  # --arch is still checked (tests/test_arch_cli.py)
@click.argument("scenario", required=False)
@_kernel_option("Kernel personality or what-if variant; several give a side-by-side view "
                "(default: the releases).")
@click.option("--debug", is_flag=True,
              help="6.18: CONFIG_DEBUG_RSEQ=y; 6.19: the rseq_debug static key on.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--list", "list_only", is_flag=True, help="List the scenarios and exit.")
@click.option("--all", "run_all", is_flag=True, help="Every scenario under every kernel, one line each.")
@_arch_option
def explain(scenario: str | None, kernels: tuple[str, ...], debug: bool, as_json: bool,
            list_only: bool, run_all: bool, arch: str) -> None:
    """Run one scenario (--list names them) on a one-task machine, under each kernel.

    \b
    Examples:
      rseqlab explain --list
      rseqlab explain preempt-in-cs --kernel 6.19
      rseqlab explain fork-child-cow -k 6.18 -k 6.19 --json
      rseqlab explain preempt-in-cs -k 6.19 -k 7.1 --arch arm64
    """
    con = console()
    names = list(scenarios.SCENARIOS)
    chosen = _kernel_list(kernels, arch, KERNELS)
    if list_only:
        if as_json:
            click.echo(json_document("explain-list", [{"scenario": s.name, "spec_row": s.row, "summary": s.summary}
                                                      for s in scenarios.SCENARIOS.values()], key="scenarios"))
        else:
            explain_report.render_list(con)
        return
    if run_all:
        rows = [[api.explain(n, k, debug=debug) for k in chosen] for n in names]
        if as_json:
            click.echo(json_document("explain", [r.as_json() for row in rows for r in row], key="results"))
        else:
            explain_report.render_matrix(con, rows)
        return
    if scenario is None:
        raise BadInput(f"missing SCENARIO; accepted: {', '.join(names)}")
    results = [api.explain(scenario, k, debug=debug) for k in chosen]
    if as_json:
        if len(results) == 1:
            click.echo(json_document("explain", results[0].as_json()))
        else:
            click.echo(json_document("explain", [r.as_json() for r in results], key="results"))
    else:
        explain_report.render(con, results)


@cli.command()
@_format_option
@exclusive("full", "tests")
@alone("list_only", but=("as_json", "arch"))
@_kernel_option("Kernel (what-if variants accepted; default: every personality).")
@click.option("--test", "-t", "tests", multiple=True,
              help="A suite test, run_param_test.sh, or a param_test command line (default: the whole suite).")
@click.option("--full", is_flag=True, help="The whole run_param_test.sh matrix (2048 runs per kernel).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the simulated machine.")
@click.option("--cpus", type=int, default=2, show_default=True, help="CPUs of the simulated machine.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--list", "list_only", is_flag=True, help="List the suite's tests and exit.")
@_plot_option("Also write the pass/fail matrix (.png or .svg).")
@_timeline_options
@_fanout_options
@_arch_option
def selftest(kernels: tuple[str, ...], tests: tuple[str, ...], full: bool, seed: int, cpus: int,
             as_json: bool, list_only: bool, plot: str | None, jobs: int | None, scheduler: str | None, arch: str,
             perfetto_out: str | None, chrome_out: str | None) -> int:
    """Run the ported kernel rseq selftests (and the TCMalloc scenario) on the simulated machine.

    \b
    Examples:
      rseqlab selftest                                   # reduced matrix, every personality
      rseqlab selftest --list
      rseqlab selftest -t tcmalloc-slab-cache -k 6.18 -k 6.19 --json
      rseqlab selftest -t "param_test -T l -4 10000 -r 100 -t 12" -k 6.19:no-cs-check
      rseqlab selftest --full                            # all 2048 run_param_test.sh runs
    """
    from .report import selftest as selftest_report
    from .selftests import param_test, runner

    if list_only:
        rows = {name: runner.summary(name) for name in runner.SUITE}
        width = max(map(len, rows))
        click.echo(json_document("selftest-list", rows, key="tests") if as_json
                   else "\n".join(f"{n:<{width}}  {t}" for n, t in rows.items()))
        return ExitStatus.SUCCESS
    chosen = _kernel_list(kernels, arch, KERNELS)
    arm64 = any(k.endswith("@arm64") for k in chosen)
    fan = Fanout.from_options(jobs, scheduler)
    try:  # the plan is checked (and counted) before anything runs; a param_test usage error shows its usage
        cases = runner.plan(list(tests) or None, full=full, cpus=cpus, arm64=arm64)
    except param_test.ParamTestUsage as exc:
        click.echo(exc.usage, err=True, nl=False)
        raise
    if perfetto_out or chrome_out:  # one run: the plan's first test under each kernel, every exit tapped
        _check_timeline_outputs(perfetto_out, chrome_out)
        rep = api.selftest(tests, chosen, seed=seed, cpus=cpus, full=full, timeline=True)
        _write_timeline(rep.timeline, perfetto_out, chrome_out)
        results = rep.results
    else:
        def streamed(on_result):
            """The runs through the fan-out layer; on Ctrl-C the finished ones, then the interrupt."""
            try:
                done = api.selftest(tests, chosen, seed=seed, cpus=cpus, full=full, fan=fan,
                                    on_result=(lambda i, r: on_result(r)) if on_result else None).results
            except fanout.Interrupted as exc:
                yield from (exc.done[i] for i in sorted(exc.done))
                raise KeyboardInterrupt from None
            yield from done

        results = selftest_report.run_streamed(streamed, len(cases) * len(chosen), as_json=as_json)
    if plot:
        selftest_report.plot(plot, results, seed=seed, cpus=cpus)
    if as_json:
        click.echo(json_document("selftest", [r.as_json() for r in results], key="results"))
    else:
        selftest_report.render(console(), results, len(results))
    return ExitStatus.SUCCESS if all(r.as_expected for r in results) else ExitStatus.FAILURE


@cli.command()
@_format_option
@alone("list_only", but=("as_json",))
# --seeds reports distributions: a single run's seed, chart, timelines and cost estimate do not apply.
@exclusive("seed_list", "seed")
@exclusive("seed_list", "plot")
@exclusive("seed_list", "perfetto_out")
@exclusive("seed_list", "chrome_out")
@exclusive("seed_list", "cost_model")
@click.option("--workload", "-w", default="kernel-build", show_default=True,
              help="A built-in workload name or a workload TOML file.")
@_kernel_option("Kernel (what-if variants accepted; default: 6.18 and 6.19).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the simulation.")
@click.option("--seeds", "seed_list", metavar="SEEDS",
              help="Many seeds (0-99, 1,5,9): each counter's mean, 95% interval and spread (docs/scale.md).")
@_fanout_options
@click.option("--cost-model", type=click.Path(dir_okay=False), help="Cost model saved by 'rseqlab cost --save'.")
@_plot_option("Also write a chart (.png or .svg).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--list", "list_only", is_flag=True, help="List the built-in workloads and exit.")
@_timeline_options
@_arch_option
def compare(workload: str, kernels: tuple[str, ...], seed: int, seed_list: str | None, jobs: int | None,
            scheduler: str | None, cost_model: str | None, plot: str | None,
            as_json: bool, list_only: bool, arch: str, perfetto_out: str | None, chrome_out: str | None) -> int | None:
    """Simulate a workload under each kernel; the table of the 6.19 commit message.

    \b
    Examples:
      rseqlab compare                               # kernel-build, 6.18 vs 6.19
      rseqlab compare -w pingpong -k 6.18,6.19 -k 6.19:no-cs-check
      rseqlab compare -w my-workload.toml --json --plot out.svg
    """
    from . import compare as cmp
    from .live.cost import estimate_ns, load_model
    from .report.compare import render_compare
    from .report.progress import simulation as simulation_progress
    from .workloads import builtin_names, load_workload

    con = console()
    if list_only:
        rows = {name: load_workload(name).description for name in builtin_names()}
        click.echo(json_document("workload-list", rows, key="workloads") if as_json
                   else "\n".join(f"{n:16} {d}" for n, d in rows.items()))
        return
    names = _kernel_list(kernels, arch, DEFAULT_PAIR)
    w = load_workload(workload)
    if seed_list is not None:
        return _compare_seeds(w, names, parse_seeds(seed_list), Fanout.from_options(jobs, scheduler), as_json)
    # One seed: the kernels one after the other in this process unless told otherwise, so the
    # bar can show each kernel's simulated time (worker processes report only when done).
    fan = Fanout.from_options(1 if jobs is None else jobs, scheduler)
    model = load_model(cost_model) if cost_model else cmp.DEFAULT_COST_MODEL
    if perfetto_out or chrome_out:  # every exit one by one (same counters as the bulk path), tapped
        _check_timeline_outputs(perfetto_out, chrome_out)
        rep = api.compare(w, names, seed=seed, cost_model=model, timeline=True)
        _write_timeline(rep.timeline, perfetto_out, chrome_out)
    else:
        rep = simulation_progress(lambda progress: api.compare(w, names, seed=seed, cost_model=model, fan=fan,
                                                               progress=progress),
                                  names, w.duration_ms, quiet=as_json)
    data = rep.document
    if plot:
        from .report.plot import plot_compare

        plot_compare(plot, data)
    if as_json:
        click.echo(json_document("compare", data))
        return
    render_compare(con, f"{w.name} (seed {seed}, {data['simulated_ns'] / 1e6:,.1f} ms simulated): "
                        f"{w.description}", data["kernels"],
                   cost_ns={k: estimate_ns(v, model) for k, v in data["kernels"].items()})
    con.print(f"cost model: {model.get('ns_per_user_access')} ns per user access ({model.get('source', cost_model)})")
    for kernel, checks in data.get("program_checks", {}).items():
        con.print(f"{kernel}: " + ", ".join(f"{key} {value}" for key, value in sorted(checks.items())), markup=False)


@cli.command()
@_format_option
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@_fanout_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (every sample kept).")
def sweep(sweep_file: str, jobs: int | None, scheduler: str | None, as_json: bool) -> None:
    """Workloads x kernels x what-if variants x seeds from a small TOML file (docs/scale.md).

    \b
    Examples:
      rseqlab sweep examples/sweep.toml
      rseqlab sweep examples/sweep.toml --scheduler tcp://HOST:8786 --json
    """
    from .report.compare import render_distribution
    from .sweep import load_sweep, run_sweep

    sw = load_sweep(sweep_file)
    fan = Fanout.from_options(jobs, scheduler)
    total = len(sw.workloads) * len(sw.kernels) * len(sw.seeds)
    data = _fan_progress(lambda cb: run_sweep(sw, fan, on_result=cb), total, "sweep", quiet=as_json)
    if as_json:
        click.echo(json_document("sweep", data))
        return
    for name, block in data["workloads"].items():
        render_distribution(console(), f"{name}: {len(sw.seeds)} seeds ({_seed_text(sw.seeds)})", block)


def _compare_seeds(w, names: list[str], seeds: list[int], fan, as_json: bool) -> int:
    """``compare --seeds``: every kernel under every seed; on Ctrl-C, the seeds every kernel finished."""
    from .report.compare import render_distribution

    status = ExitStatus.SUCCESS
    try:
        rep = _fan_progress(lambda cb: api.compare(w, names, seeds=seeds, fan=fan, on_result=cb),
                            len(names) * len(seeds), f"{w.name}", quiet=as_json)
    except api.PartialReport as exc:
        _error(str(exc))
        rep, status = exc.report, ExitStatus.INTERRUPTED
    data = rep.document
    seeds = data["seeds"]
    if as_json:
        click.echo(json_document("compare-seeds", data))
    else:
        render_distribution(console(), f"{w.name}: {len(seeds)} seeds ({_seed_text(seeds)}): {w.description}", data)
    return status


def _seed_text(seeds: list[int]) -> str:
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
    return ",".join(map(str, seeds[:8])) + (",..." if len(seeds) > 8 else "")


def _fan_progress(run, total: int | None, label: str, *, quiet: bool = False):
    """A progress bar on stderr for fanned-out runs longer than a second (only on a terminal,
    never with --json: report/progress.py's rules)."""
    import time

    from rich.console import Console
    from rich.progress import Progress

    err = Console(stderr=True)
    if quiet or not err.is_terminal:
        return run(None)
    started = time.monotonic()
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task(label, total=total, visible=False)

        def on_result(index, result) -> None:
            bar.update(task, advance=1, visible=time.monotonic() - started > 1.0)

        return run(on_result)


# ======================================================================
# Live kernel: record, replay, validate, cost, rseq-area (issue 5)
# ======================================================================
@cli.command(context_settings={"ignore_unknown_options": True})
@_format_option
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="rseqlab.trace", show_default=True,
              help="Trace file to write.")
@click.option("--buffer-mb", type=int, default=32, show_default=True, help="Ring buffer per CPU, in MiB.")
@click.option("--json", "as_json", is_flag=True, help="Print the recording summary as JSON.")
@click.option("--print-command", "print_command", type=click.Choice(["trace-cmd", "perf"]),
              help="Print the trace-cmd or perf command line that records the same events, and exit.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def record(output: str, buffer_mb: int, as_json: bool, print_command: str | None, command: tuple[str, ...]) -> int:
    """Record COMMAND's whole process tree on the live kernel (root; mounts tracefs if needed).

    Exits with COMMAND's own status (128+N if a signal N ended it), as perf record does.

    \b
    Examples:
      rseqlab record -o make.trace -- make -j2
      rseqlab record -- $(rseqlab workload pingpong) 20000
      rseqlab record --print-command trace-cmd
    """
    from .report import live as live_report
    from .trace.events import tool_command

    if print_command is not None:
        click.echo(tool_command(print_command, buffer_kb=buffer_mb * 1024))
        return
    res = api.record(list(command), output, buffer_mb=buffer_mb, stdout_to_stderr=as_json)
    if as_json:
        click.echo(json_document("record", res.summary))
    else:
        live_report.render_record(console(sys.stderr), res.summary, res.path)
    return command_status(res.summary.get("exit_status"))


@cli.command()
@_format_option
@click.argument("trace_files", nargs=-1, type=click.Path(dir_okay=False))
@_kernel_option("Kernel (default: 6.18 and 6.19).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--per-process", is_flag=True, help="Add observed and predicted counts per process.")
@click.option("--cost-model", type=click.Path(dir_okay=False), help="Cost model saved by 'rseqlab cost --save'.")
@_fanout_options
@click.option("--reference", is_flag=True, help="Use the per-event reference loop instead of the array path.")
@_plot_option("Also write observed vs predicted, per tracepoint and per process (.png or .svg).")
@_arch_option
def replay(trace_files: tuple[str, ...], kernels: tuple[str, ...], as_json: bool, per_process: bool,
           cost_model: str | None, jobs: int | None, scheduler: str | None, reference: bool, plot: str | None,
           arch: str) -> None:
    """Drive every recorded task through each kernel personality; same table as compare.

    TRACE_FILE defaults to rseqlab.trace, what 'rseqlab record' writes by default. Several
    recordings: each is replayed (in parallel, see --jobs/--scheduler) and every counter is
    reported as a distribution over the recordings (docs/scale.md).

    \b
    Examples:
      rseqlab replay                                # rseqlab.trace
      rseqlab replay make.trace
      rseqlab replay make.trace -k 6.18,6.19 --json --per-process
      rseqlab replay fleet/*.trace --json
    """
    from .live.cost import load_model
    from .report import live as live_report

    names = _kernel_list(kernels, arch, DEFAULT_PAIR)
    fan = Fanout.from_options(jobs, scheduler)
    if len(trace_files) > 1:
        if plot or per_process or cost_model:
            raise BadInput("--plot, --per-process and --cost-model take one recording")
        return _replay_many(list(trace_files), names, reference, fan, as_json)
    trace_file = trace_files[0] if trace_files else "rseqlab.trace"
    model = load_model(cost_model) if cost_model else None
    rep = api.replay(trace_file, names, per_process=per_process, cost_model=model, reference=reference, fan=fan)
    data, trace, results = rep.document, rep.trace, rep.results
    if plot:
        live_report.plot_observed_vs_predicted(plot, data, trace, results, title=f"Replay of {trace_file}")
    if as_json:
        click.echo(json_document("replay", data))
    else:
        live_report.render_replay(console(), data, title=f"Replay of {trace_file}: "
                                  f"{' '.join(trace.meta.get('command', []))}")


def _replay_many(paths: list[str], names: list[str], reference: bool, fan, as_json: bool) -> None:
    """``replay A.trace B.trace ...``: one replay per recording, aggregated like ``compare --seeds``."""
    from .report.compare import render_distribution

    data = _fan_progress(lambda cb: api.replay(paths, names, reference=reference, fan=fan, on_result=cb),
                         len(paths), "recordings").document
    if as_json:
        click.echo(json_document("replay-recordings", data))
    else:
        render_distribution(console(), f"Replay of {len(paths)} recordings", data)


@cli.command(context_settings={"ignore_unknown_options": True})
@_format_option
@exclusive("vm_version", "buffer_mb")  # the guest recorder sizes its own buffers
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_kernel_option("Kernel to predict with besides the live one (default: 6.18 and 6.19).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Also keep the trace file.")
@click.option("--buffer-mb", type=int, default=32, show_default=True, help="Ring buffer per CPU, in MiB.")
@click.option("--max-error", type=float, help="Exit 1 if |relative error| of rseq_update exceeds this percentage "
              "(FILE: of any counter or tracepoint).")
@click.option("--slack", type=int, default=0, show_default=True,
              help="FILE: also accept a difference of up to N events where fewer than 150 were observed.")
@click.option("--vm", "vm_version", metavar="VERSION",
              help="Record COMMAND in a real kernel VERSION under QEMU (rseqlab vm run), then validate that FILE.")
@click.option("--cpus", type=int, default=2, show_default=True, help="--vm: guest CPUs.")
@_plot_option("Also write observed vs predicted, per counter and per process (.png or .svg).")
@_arch_option
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def validate(as_json: bool, kernels: tuple[str, ...], output: str | None, buffer_mb: int, max_error: float | None,
             slack: int, vm_version: str | None, cpus: int, plot: str | None, arch: str,
             command: tuple[str, ...]) -> int:
    """Record COMMAND, replay it, compare the live kernel's tracepoints with the prediction.

    Exits with COMMAND's own status when that is not 0 (as record does), else 1 when --max-error
    is exceeded, else 0.

    With a single argument that is an rseqlab trace FILE (e.g. a guest recording, see
    docs/guest-recording.md), validate that recording instead: replay it through the personality
    of the kernel that recorded it and compare every counter of the kernel's statistics (when the
    recording has them) and the tracepoints.

    \b
    Examples:
      rseqlab validate -- $(rseqlab workload pingpong) 20000
      rseqlab validate --json --max-error 2 -- $(rseqlab workload threadmix)
      rseqlab validate --max-error 2 --slack 3 guest.trace
    """
    import platform

    from .kernel import arch_by_name
    from .report import live as live_report
    from .trace.format import file_version

    api.check_validate_options(max_error, slack)
    names = _kernel_list(kernels, arch, DEFAULT_PAIR)
    here = platform.machine()
    if arch is not None and arch_by_name(arch).machine != here:
        raise BadInput(f"validate --arch {arch}: the live kernel runs on {here}; validation compares "
                       "the live kernel with its own architecture's personality")
    ctx = click.get_current_context()
    if vm_version is not None:
        return _validate_vm(vm_version, list(command), output, cpus, names, as_json, max_error, slack, plot)
    if given(ctx, "cpus"):
        raise BadInput("--cpus applies only with --vm (the guest's CPUs)")
    if len(command) == 1 and (file_version(command[0]) is not None or _foreign_recording(command[0])):
        for name, option in (("output", "-o"), ("buffer_mb", "--buffer-mb")):
            if given(ctx, name):
                raise BadInput(f"{option} cannot be used when validating a trace FILE (nothing is recorded)")
        return _validate_file(command[0], names, as_json, max_error, slack, plot)
    if given(ctx, "slack"):
        raise BadInput("--slack applies only to a trace FILE or --vm (a live validation compares rseq_update)")
    rep = api.validate(kernels=names, command=list(command), output=output, buffer_mb=buffer_mb,
                       stdout_to_stderr=as_json)
    data, res, results = rep.document, rep.recording, rep.results
    if plot:
        live_report.plot_observed_vs_predicted(plot, data, res.trace, results,
                                               title=f"Validation of {' '.join(command)} on the live kernel")
    if as_json:
        click.echo(json_document("validate", data))
    else:
        live_report.render_record(console(sys.stderr), res.summary, res.path if output else None)
        live_report.render_validation(console(), data)
    own = command_status(res.summary.get("exit_status"))
    if own != ExitStatus.SUCCESS:
        return own
    err = data["validation"]["relative_error"]
    if max_error is not None and (err is None or abs(err) * 100.0 > max_error):
        return ExitStatus.FAILURE
    return ExitStatus.SUCCESS


def _foreign_recording(path: str) -> bool:
    """A trace.dat or perf.data (by its magic), which ``validate FILE`` takes like a trace file."""
    from .trace.format import foreign_kind

    try:
        return foreign_kind(path) is not None
    except BadInput:
        return False


def _validate_vm(version: str, command: list[str], output: str | None, cpus: int, names: list[str],
                 as_json: bool, max_error: float | None, slack: int, plot: str | None = None) -> int:
    """``validate --vm VERSION -- COMMAND``: record in the guest (docs/real-kernels.md), validate the file."""
    from .tmpdirs import owned_tempdir
    from .vm import vmrun

    with owned_tempdir("rseqlab-validate-vm-") as tmp:
        path = output or f"{tmp}/vm.trace"
        res = vmrun.vm_run(version, command, path, cpus=cpus, serial_beside_output=output is not None)
        if not as_json:
            vmrun.render_summary(console(sys.stderr), res.summary)
        status = _validate_file(path, names, as_json, max_error, slack, plot)
        return command_status(res.summary.get("exit_status")) or status


def _validate_file(path: str, names: list[str], as_json: bool, max_error: float | None, slack: int,
                   plot: str | None = None) -> int:
    """``validate FILE``: a recording (guest or host) against its kernel's personality."""
    from .report import live as live_report

    rep = api.validate(path, names, max_error=max_error, slack=slack)
    data, trace, results = rep.document, rep.trace, rep.results
    if plot:
        live_report.plot_observed_vs_predicted(plot, data, trace, results, title=f"Validation of {path}")
    if as_json:
        click.echo(json_document("validate", data))
    else:
        live_report.render_file_validation(console(), data, path)
    return ExitStatus.FAILURE if data["validation"]["failed"] else ExitStatus.SUCCESS


@cli.command()
@_format_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--reps", type=int, default=21, show_default=True, help="Interleaved A/B repetitions.")
@click.option("--rounds", type=int, default=20000, show_default=True, help="Ping-pong round trips per run.")
@click.option("--signals", type=int, default=20000, show_default=True, help="Self-signals per run.")
@click.option("--warmup", type=int, default=1, show_default=True,
              help="Discarded A/B repetitions before the measured ones.")
@click.option("--save", type=click.Path(dir_okay=False),
              help="Save the cost model (JSON) for compare/replay; refused when the noise hides the effect.")
def cost(as_json: bool, reps: int, rounds: int, signals: int, warmup: int, save: str | None) -> int:
    """Measure what a legacy RSEQ pass costs here: A/B with GLIBC_TUNABLES=glibc.pthread.rseq=0.

    Each side reports median, interquartile range and minimum; a benchmark whose noise (the larger
    IQR) is at least its effect (the difference of the medians) gets a warning on stderr, and
    --save refuses (exit 1) when that is the ping-pong, the model's source.

    \b
    Examples:
      rseqlab cost
      rseqlab cost --reps 31 --save cost.json
    """
    from .files import check_writable
    from .live import cost as live_cost
    from .report import live as live_report

    if save is not None:
        check_writable(save, "--save", "cost model")  # before the measurement, not after it
    model = live_cost.measure(reps=reps, rounds=rounds, signals=signals, warmup=warmup)
    if as_json:
        click.echo(json_document("cost", model))
    else:
        live_report.render_cost(console(), model)
    for line in live_cost.noise_warnings(model):
        click.echo(f"rseqlab: WARNING: {line}", err=True)
    if save:
        live_cost.refuse_meaningless(model)  # after the figures are shown, so the user sees why
        live_cost.save_model(model, save)
    return ExitStatus.SUCCESS


@cli.command("rseq-area")
@_format_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def rseq_area(as_json: bool) -> None:
    """Read the calling thread's real rseq area (glibc __rseq_offset/__rseq_size, thread pointer).

    \b
    Examples:
      rseqlab rseq-area
      GLIBC_TUNABLES=glibc.pthread.rseq=0 rseqlab rseq-area --json
    """
    from .live.rseq_area import read_rseq_area
    from .report import live as live_report

    area = read_rseq_area()
    if as_json:
        click.echo(json_document("rseq-area", area.as_json()))
    else:
        live_report.render_rseq_area(console(), area)


@cli.command()
@alone("list_only", but=("as_json",))
@click.argument("name", required=False)
@click.option("--list", "list_only", is_flag=True, help="List the shipped workloads.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (--list, or the built path).")
def workload(name: str | None, list_only: bool, as_json: bool) -> None:
    """Build a shipped workload (C source, machine's gcc) and print its path.

    \b
    Examples:
      rseqlab workload --list
      rseqlab record -- $(rseqlab workload pingpong) 20000 same
    """
    from .live.workloads import WORKLOADS, build

    if list_only or name is None:
        if name is None and not list_only:
            raise BadInput(f"missing NAME; accepted: {', '.join(WORKLOADS)} (or --list)")
        click.echo(json_document("workload-list", dict(WORKLOADS), key="workloads") if as_json
                   else "\n".join(f"{n:12} {t}" for n, t in WORKLOADS.items()))
        return
    path = str(build(name))
    click.echo(json_document("workload", {"workload": name, "path": path}) if as_json else path)


@cli.command("check")
@_format_option
@exclusive("scenario", "list_only", "list_kernels")
@alone("list_only", but=("as_json", "arch"))
@alone("list_kernels", but=("as_json", "arch"))
# --replay reruns a saved counterexample: its file names the scenario, kernel and bounds.
@alone("replay_file", but=("as_json",))
# --estimate only probes the search: nothing is explored, saved, measured or drawn.
@exclusive("estimate", "save_to")
@exclusive("estimate", "measure_reduction")
@exclusive("estimate", "subtrees")
@exclusive("estimate", "plot")
@exclusive("estimate", "perfetto_out")
@exclusive("estimate", "chrome_out")
@click.argument("scenario", required=False)
@_kernel_option("Kernel personality or what-if variant (see --list-kernels); several are checked in turn.")
@click.option("--preemptions", type=int, default=2, show_default=True, help="At most this many preemptions.")
@click.option("--migrations", type=int, default=0, show_default=True, help="At most this many migrations.")
@click.option("--signals", type=int, default=1, show_default=True, help="At most this many SIGUSR1 deliveries.")
@click.option("--debug", is_flag=True, help="6.18: CONFIG_DEBUG_RSEQ=y; 6.19: the rseq_debug static key on.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--list", "list_only", is_flag=True, help="List the built-in scenarios with their invariants.")
@click.option("--reduction", type=click.Choice(["sleep", "local", "none"]), default="sleep", show_default=True,
              help="Partial-order reduction: sleep sets + thread-local persistent sets, the latter only, or "
                   "none (state hashing only).")
@click.option("--measure-reduction", is_flag=True, help="Also run the unreduced search and report the ratio.")
@click.option("--subtrees", type=int, default=1, show_default=True,
              help="Split the search into at least N subtrees, explored in parallel (--jobs, --scheduler).")
@_fanout_options
@click.option("--estimate", is_flag=True, help="Estimate the size of the search (random probes) instead of running it.")
@click.option("--probes", type=int, default=50, show_default=True, help="--estimate: random probes.")
@click.option("--seed", type=int, default=0, show_default=True, help="--estimate: seed of the probes.")
@click.option("--save-counterexample", "save_to", type=click.Path(dir_okay=False),
              help="Write the shortest counterexample's choices to FILE (for --replay).")
@click.option("--replay", "replay_file", type=click.Path(dir_okay=False),
              help="Run a counterexample saved by --save-counterexample again, traced.")
@_plot_option("Also write distinct states against executions explored (.png or .svg).")
@_timeline_options
@_arch_option
def check_cmd(scenario: str | None, kernels: tuple[str, ...], preemptions: int, migrations: int, signals: int,
              debug: bool, as_json: bool, list_only: bool, reduction: str,
              measure_reduction: bool, subtrees: int, jobs: int | None, scheduler: str | None, estimate: bool,
              probes: int, seed: int, save_to: str | None, replay_file: str | None, plot: str | None,
              arch: str, perfetto_out: str | None, chrome_out: str | None) -> int:
    """Explore every placement of preemptions, migrations and signals in SCENARIO's critical sections.

    SCENARIO is a built-in name (--list) or a step file: a path, or the name of one shipped
    with rseqlab (percpu-counter.rseq, syscall-in-cs.rseq; --list names them).
    Exits 1 if some execution breaks the invariant (under any of the kernels).

    \b
    Examples:
      rseqlab check --list
      rseqlab check percpu-list --kernel 6.19
      rseqlab check tcmalloc-slab-cache --kernel 6.19 --preemptions 1 --json
      rseqlab check percpu-counter.rseq --kernel 6.19:no-cs-check
      rseqlab check percpu-counter --kernel 6.19 --arch arm64
    """
    from . import check as checker
    from .check.stepfile import shipped_examples
    from .report import check as check_report

    _on_arch([], arch)  # BadInput naming the accepted architectures
    if list_only:
        found = [factory() for factory in checker.SCENARIOS.values()]
        examples = shipped_examples()
        if as_json:
            click.echo(json_document("check-list", {
                "scenarios": [{"scenario": s.name, "summary": s.summary, "invariant": s.invariant} for s in found],
                "step_files": list(examples)}))
        else:
            click.echo(check_report.render_list(found))
            click.echo(f"\nshipped step files (check NAME.rseq): {', '.join(examples)}")
        return ExitStatus.SUCCESS
    if replay_file is not None:
        from .check import parallel

        job, choices, _ = parallel.load_counterexample(replay_file)
        result = parallel.replay_counterexample(job, choices)
        click.echo(json_document("check", check_report.as_json(result)) if as_json else check_report.render(result))
        return ExitStatus.FAILURE if result.violations else ExitStatus.SUCCESS
    if scenario is None:
        raise BadInput(f"missing SCENARIO; accepted: {', '.join(checker.SCENARIOS)}, or a step file")
    chosen = _kernel_list(kernels, arch)
    if not chosen:
        raise BadInput(f"missing --kernel; accepted: {', '.join(kernel_names())}")
    from .check import parallel

    bounds = checker.Bounds(preemptions, migrations, signals)
    bounds.validate()
    spec = parallel.scenario_spec(scenario)
    jobs_ = [parallel.Job(spec, kernel, bounds, debug, reduction) for kernel in chosen]
    if estimate:
        estimates = [parallel.estimate(job, probes=probes, seed=seed) for job in jobs_]
        if as_json:
            click.echo(json_document("check-estimate", estimates[0]) if len(estimates) == 1 else json_document("check-estimate", estimates, key="results"))
        else:
            click.echo("\n\n".join(check_report.render_estimate(j, e) for j, e in zip(jobs_, estimates)))
        return ExitStatus.SUCCESS
    if save_to is not None and len(jobs_) > 1:
        raise BadInput("--save-counterexample: give one kernel")
    fan = Fanout.from_options(jobs, scheduler)
    from .report.progress import exploration

    _check_timeline_outputs(perfetto_out, chrome_out)
    reports = []
    for kernel in chosen:
        run = functools.partial(api.check, scenario, kernel, preemptions=preemptions, migrations=migrations,
                                signals=signals, debug=debug, reduction=reduction,
                                measure_reduction=measure_reduction, save_counterexample=save_to)
        if subtrees == 1:
            reports.append(exploration(lambda progress, run=run: run(progress=progress), quiet=as_json))
        else:
            reports.append(_fan_progress(lambda cb, run=run: run(subtrees=subtrees, fan=fan, on_result=cb),
                                         None, f"{scenario} subtrees", quiet=as_json))
    results = [rep.results for rep in reports]
    if plot:
        check_report.plot(plot, results)
    if perfetto_out or chrome_out:  # the first kernel's counterexample (or that it had none), step by step
        shown = next((rep for rep in reports if rep.results.violations), reports[0])
        _write_timeline(shown.timeline, perfetto_out, chrome_out)
    if as_json:
        docs = [rep.document for rep in reports]
        click.echo(json_document("check", docs[0]) if len(docs) == 1 else json_document("check", docs, key="results"))
    else:
        click.echo("\n\n".join(check_report.render(rep.results, rep.unreduced) for rep in reports))
    return ExitStatus.FAILURE if any(r.violations for r in results) else ExitStatus.SUCCESS


@cli.command("export")
@click.argument("trace_file", type=click.Path(dir_okay=False))
@_kernel_option("Kernels whose exits to user are overlaid (default: 6.18 and 6.19).")
@click.option("--perfetto", "perfetto_out", type=click.Path(dir_okay=False),
              help="Write a Perfetto trace (protobuf; open it in the Perfetto UI).")
@click.option("--chrome", "chrome_out", type=click.Path(dir_okay=False),
              help="Write Chrome trace-event JSON (microsecond timestamps; chrome://tracing, Perfetto).")
@_arch_option
def export_cmd(trace_file: str, kernels: tuple[str, ...], perfetto_out: str | None, chrome_out: str | None,
               arch: str) -> None:
    """Write a recording's timeline with each kernel's exits to user overlaid (docs/export.md).

    \b
    Examples:
      rseqlab export make.trace --perfetto make.pftrace
      rseqlab export trace.dat --chrome trace.json -k 6.19
    """
    from .export import recording_timeline

    if not perfetto_out and not chrome_out:
        raise BadInput("export: say what to write: --perfetto OUT.pftrace and/or --chrome OUT.json")
    _check_timeline_outputs(perfetto_out, chrome_out)
    names = _kernel_list(kernels, arch, DEFAULT_PAIR)
    trace = api.load_trace(trace_file).trace
    api.check_replayable(trace)
    _write_timeline(recording_timeline(trace, names, title=f"{trace_file}: {' '.join(trace.meta.get('command', []))}"),
                    perfetto_out, chrome_out)


@cli.command("trace")
@click.argument("trace_file", type=click.Path(dir_okay=False))
@click.option("--events", "events", is_flag=True, help="Dump every event as one table (one row per event).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "parquet", "markdown"]),
              help="Output format (--events: csv by default; parquet is binary, redirect stdout).")
def trace_cmd(trace_file: str, events: bool, fmt: str | None) -> None:
    """What a recording holds (rseqlab trace, trace.dat or perf.data): its summary, or --events.

    \b
    Examples:
      rseqlab trace make.trace
      rseqlab trace trace.dat --events --format parquet > events.parquet
      rseqlab trace perf.data --events --format csv > events.csv
    """
    from .report import formats, tables

    trace = api.load_trace(trace_file).trace
    if not events:
        m = trace.meta
        doc = {"file": trace_file, "source": m.get("source", {"kind": "rseqlab-trace"}), "events": len(trace),
               "by_kind": trace.kind_counts(), "lost": (m.get("lost") or {}).get("total", 0),
               "tasks": len(m.get("tasks", {})), "cpus": m.get("cpus"),
               "kernel": (m.get("kernel") or {}).get("release"), "duration_ns": m.get("duration_ns")}
        if fmt == "json":
            click.echo(json_document("trace", doc))
        elif fmt in ("csv", "markdown", "parquet"):
            formats.emit(doc, fmt)
        else:
            click.echo(tables.to_markdown(tables.rows_of(doc)), nl=False)
        return
    fmt = fmt or "csv"
    table = tables.event_table(trace)
    if fmt == "parquet":
        formats.write_binary(tables.parquet_bytes(table))
    elif fmt == "csv":
        import pyarrow.csv as pcsv
        import pyarrow as pa

        sink = pa.BufferOutputStream()
        pcsv.write_csv(table, sink)
        click.echo(sink.getvalue().to_pybytes().decode(), nl=False)
    else:
        rows = table.to_pylist()
        if fmt == "json":
            click.echo(json_document("trace-events", rows, key="events"))
        else:
            click.echo(tables.to_markdown(rows), nl=False)


def _register_vm() -> None:
    from .vm.commands import kernels_group, vm_group

    cli.add_command(kernels_group)
    cli.add_command(vm_group)


_register_vm()

#: One line per command for ``rseqlab --help`` (click would cut each docstring's first sentence).
SHORT_HELP = {
    "explain": "One scenario on a one-task machine, under each kernel.",
    "compare": "A simulated workload under each kernel (the 6.19 commit's table).",
    "selftest": "The kernel's rseq selftests on the simulated machine.",
    "check": "Every interleaving of a critical section: is the invariant kept?",
    "record": "Record a command's process tree on the live kernel.",
    "replay": "Replay a recording through each kernel.",
    "validate": "Predicted against observed, live or from a recording.",
    "cost": "What a legacy RSEQ pass costs on this machine.",
    "rseq-area": "The calling thread's real struct rseq.",
    "workload": "Build a shipped C workload and print its path.",
    "kernels": "Real kernels: offered, cached, and their personalities.",
    "vm": "Boot real kernels under QEMU; run, record, probe there.",
    "export": "A recording's timeline for Perfetto, with each kernel's exits.",
    "trace": "A recording's summary, or its events as one table (csv, parquet).",
    "sweep": "Workloads x kernels x variants x seeds, as distributions.",
}
for _name, _text in SHORT_HELP.items():
    cli.commands[_name].short_help = _text


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status instead of raising.

    SIGTERM and SIGHUP end every command as Ctrl-C does (``_startup.terminate_cleanly``): its
    clean-ups run, one line goes to stderr, and the status is 128 + the signal's number."""
    ascii_fallback()
    with _startup.terminate_cleanly():
        return _run(argv)


def _run(argv: list[str] | None) -> int:
    try:
        status = cli.main(args=argv, prog_name="rseqlab", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        # A bare ``rseqlab`` (or ``rseqlab vm``) is a request for the help, printed as --help prints it.
        click.echo(exc.ctx.get_help())
        return ExitStatus.SUCCESS
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
    except Terminated as exc:
        _error(str(exc))
        return 128 + exc.signum
    except OSError as exc:
        if exc.filename is None:
            raise  # not about a file the user named: an rseqlab bug, with its traceback
        # A path the user gave that the system refuses (too long, a loop, not a directory, ...).
        _error(f"{exc.filename}: {exc.strerror or exc}")
        return ExitStatus.BAD_INPUT
    except (KeyboardInterrupt, click.Abort) as exc:
        # click turns a KeyboardInterrupt into Abort; the recorder's says what it kept.
        cause = exc if isinstance(exc, KeyboardInterrupt) else exc.__context__
        _error(str(cause) if isinstance(cause, KeyboardInterrupt) and str(cause) else "interrupted")
        return ExitStatus.INTERRUPTED
    return status if isinstance(status, int) else ExitStatus.SUCCESS


def _error(message: str) -> None:
    # One line whatever the message quotes: a file name or argument may hold a line break.
    one_line = message.strip().replace("\r", "\\r").replace("\n", "\\n")
    print(f"rseqlab: error: {one_line}", file=sys.stderr)


_startup.release(_previous_handlers)

if __name__ == "__main__":
    sys.exit(main())
