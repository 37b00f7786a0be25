"""The ``rseqlab`` command: a thin shell over the library.

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

from . import extras, scenarios
from .cli_conflicts import alone, exclusive, given
from .errors import BadInput, ExitStatus, RseqlabError, Terminated, command_status
from .kernel import PERSONALITIES, kernel_names
from .report import ascii_fallback, console, json_document
from .report import explain as explain_report

KERNELS = list(PERSONALITIES)
ARCH_HELP = "Architecture the kernels are built for: x86_64 (default) or arm64 (see docs/architectures.md)."


def _arch_option(fn):
    """``--arch``: every command that takes a kernel takes it (issue 13)."""
    return click.option("--arch", "arch", default=None, help=ARCH_HELP)(fn)


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


#: What compare, replay and validate put side by side unless told otherwise: the rewrite.
DEFAULT_PAIR = ("6.18", "6.19")
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
        rows = [[scenarios.explain(n, k, debug=debug) for k in chosen] for n in names]
        if as_json:
            click.echo(json_document("explain", [r.as_json() for row in rows for r in row], key="results"))
        else:
            explain_report.render_matrix(con, rows)
        return
    if scenario is None:
        raise BadInput(f"missing SCENARIO; accepted: {', '.join(names)}")
    results = [scenarios.explain(scenario, k, debug=debug) for k in chosen]
    if as_json:
        if len(results) == 1:
            click.echo(json_document("explain", results[0].as_json()))
        else:
            click.echo(json_document("explain", [r.as_json() for r in results], key="results"))
    else:
        explain_report.render(con, results)


@cli.command()
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
@_arch_option
def selftest(kernels: tuple[str, ...], tests: tuple[str, ...], full: bool, seed: int, cpus: int,
             as_json: bool, list_only: bool, plot: str | None, arch: str) -> int:
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
    try:
        cases = runner.plan(list(tests) or None, full=full, cpus=cpus,
                            arm64=any(k.endswith("@arm64") for k in chosen))
    except param_test.ParamTestUsage as exc:
        click.echo(exc.usage, err=True, nl=False)
        raise
    results = selftest_report.run_streamed(lambda on_result: runner.run(cases, chosen, seed=seed, on_result=on_result),
                                           len(cases) * len(chosen), as_json=as_json)
    if plot:
        selftest_report.plot(plot, results, seed=seed, cpus=cpus)
    if as_json:
        click.echo(json_document("selftest", [r.as_json() for r in results], key="results"))
    else:
        selftest_report.render(console(), results, len(results))
    return ExitStatus.SUCCESS if all(r.as_expected for r in results) else ExitStatus.FAILURE


@cli.command()
@alone("list_only", but=("as_json",))
@click.option("--workload", "-w", default="kernel-build", show_default=True,
              help="A built-in workload name or a workload TOML file.")
@_kernel_option("Kernel (what-if variants accepted; default: 6.18 and 6.19).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the simulation.")
@click.option("--jobs", "-j", type=int, default=1, show_default=True, help="Run kernels in parallel processes.")
@click.option("--cost-model", type=click.Path(dir_okay=False), help="Cost model saved by 'rseqlab cost --save'.")
@_plot_option("Also write a chart (.png or .svg).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--list", "list_only", is_flag=True, help="List the built-in workloads and exit.")
@_arch_option
def compare(workload: str, kernels: tuple[str, ...], seed: int, jobs: int, cost_model: str | None, plot: str | None,
            as_json: bool, list_only: bool, arch: str) -> None:
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
    model = load_model(cost_model) if cost_model else cmp.DEFAULT_COST_MODEL
    results = simulation_progress(lambda progress: cmp.compare(w, names, seed=seed, jobs=jobs, progress=progress),
                                  names, w.duration_ms, quiet=as_json)
    data = cmp.compare_json(w, seed, results, model)
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


# ======================================================================
# Live kernel: record, replay, validate, cost, rseq-area (issue 5)
# ======================================================================
@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="rseqlab.trace", show_default=True,
              help="Trace file to write.")
@click.option("--buffer-mb", type=int, default=32, show_default=True, help="Ring buffer per CPU, in MiB.")
@click.option("--json", "as_json", is_flag=True, help="Print the recording summary as JSON.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def record(output: str, buffer_mb: int, as_json: bool, command: tuple[str, ...]) -> int:
    """Record COMMAND's whole process tree on the live kernel (root; mounts tracefs if needed).

    Exits with COMMAND's own status (128+N if a signal N ended it), as perf record does.

    \b
    Examples:
      rseqlab record -o make.trace -- make -j2
      rseqlab record -- $(rseqlab workload pingpong) 20000
    """
    from .report import live as live_report
    from .trace.record import record as do_record

    res = do_record(list(command), output, buffer_mb=buffer_mb, stdout_to_stderr=as_json)
    if as_json:
        click.echo(json_document("record", res.summary))
    else:
        live_report.render_record(console(sys.stderr), res.summary, res.path)
    return command_status(res.summary.get("exit_status"))


@cli.command()
@click.argument("trace_file", type=click.Path(dir_okay=False), default="rseqlab.trace")
@_kernel_option("Kernel (default: 6.18 and 6.19).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--per-process", is_flag=True, help="Add observed and predicted counts per process.")
@click.option("--cost-model", type=click.Path(dir_okay=False), help="Cost model saved by 'rseqlab cost --save'.")
@click.option("--jobs", "-j", type=int, default=1, show_default=True,
              help="Replay kernels in parallel processes (identical results).")
@click.option("--reference", is_flag=True, help="Use the per-event reference loop instead of the array path.")
@_plot_option("Also write observed vs predicted, per tracepoint and per process (.png or .svg).")
@_arch_option
def replay(trace_file: str, kernels: tuple[str, ...], as_json: bool, per_process: bool, cost_model: str | None,
           jobs: int, reference: bool, plot: str | None, arch: str) -> None:
    """Drive every recorded task through each kernel personality; same table as compare.

    TRACE_FILE defaults to rseqlab.trace, what 'rseqlab record' writes by default.

    \b
    Examples:
      rseqlab replay                                # rseqlab.trace
      rseqlab replay make.trace
      rseqlab replay make.trace -k 6.18,6.19 --json --per-process
    """
    from .live.cost import load_model
    from .report import live as live_report
    from .trace.format import load
    from .trace.replay import replay as do_replay

    names = _kernel_list(kernels, arch, DEFAULT_PAIR)
    model = load_model(cost_model) if cost_model else None
    trace = load(trace_file)
    _replayable(trace)
    results = do_replay(trace, names, reference=reference, jobs=jobs)
    data = live_report.replay_json(trace, results, per_process=per_process, cost_model=model)
    if plot:
        live_report.plot_observed_vs_predicted(plot, data, trace, results, title=f"Replay of {trace_file}")
    if as_json:
        click.echo(json_document("replay", data))
    else:
        live_report.render_replay(console(), data, title=f"Replay of {trace_file}: "
                                  f"{' '.join(trace.meta.get('command', []))}")


def _replayable(trace) -> None:
    """The replay reads syscall numbers of x86_64 (``trace/replay.py``); another recording is refused."""
    machine = (trace.meta.get("kernel") or {}).get("machine")
    if machine not in (None, "x86_64"):
        raise BadInput(f"the trace was recorded on {machine}; the replay reads x86_64 recordings only "
                       "(--arch picks the architecture of the kernels the recording is replayed on)")


@cli.command(context_settings={"ignore_unknown_options": True})
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
    import os
    import platform

    from .kernel import arch_by_name
    from .report import live as live_report
    from .tmpdirs import owned_tempdir
    from .trace.format import file_version
    from .trace.record import record as do_record
    from .trace.replay import replay as do_replay

    if max_error is not None and not (0 <= max_error < float("inf")):
        raise BadInput(f"--max-error: expected a percentage >= 0, got {max_error}")
    if slack < 0:
        raise BadInput(f"--slack: expected a number of events >= 0, got {slack}")
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
    if len(command) == 1 and file_version(command[0]) is not None:
        for name, option in (("output", "-o"), ("buffer_mb", "--buffer-mb")):
            if given(ctx, name):
                raise BadInput(f"{option} cannot be used when validating a trace FILE (nothing is recorded)")
        return _validate_file(command[0], names, as_json, max_error, slack, plot)
    if given(ctx, "slack"):
        raise BadInput("--slack applies only to a trace FILE or --vm (a live validation compares rseq_update)")
    live = live_report.live_personality()
    if live not in names:
        names.insert(0, live)
    with owned_tempdir("rseqlab-validate-live-") as tmp:
        res = do_record(list(command), output or os.path.join(tmp, "validate.trace"), buffer_mb=buffer_mb,
                        stdout_to_stderr=as_json)
    results = do_replay(res.trace, names)
    data = live_report.validation_json(res.trace, results, live)
    data["record"] = res.summary
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
    from .trace.format import load
    from .trace.replay import replay as do_replay
    from .vm import validate as vm_validate

    trace = load(path)
    personality = vm_validate.personality_of(trace)
    if personality not in names:
        names.insert(0, personality)
    results = do_replay(trace, names)
    data = live_report.validation_json(trace, results, personality)
    data["validation"].update(vm_validate.compare(trace, results, personality, max_error=max_error, slack=slack))
    if plot:
        live_report.plot_observed_vs_predicted(plot, data, trace, results, title=f"Validation of {path}")
    if as_json:
        click.echo(json_document("validate", data))
    else:
        live_report.render_file_validation(console(), data, path)
    return ExitStatus.FAILURE if data["validation"]["failed"] else ExitStatus.SUCCESS


@cli.command()
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
@exclusive("scenario", "list_only", "list_kernels")
@alone("list_only", but=("as_json", "arch"))
@alone("list_kernels", but=("as_json", "arch"))
@click.argument("scenario", required=False)
@_kernel_option("Kernel personality or what-if variant (see --list-kernels); several are checked in turn.")
@click.option("--preemptions", type=int, default=2, show_default=True, help="At most this many preemptions.")
@click.option("--migrations", type=int, default=0, show_default=True, help="At most this many migrations.")
@click.option("--signals", type=int, default=1, show_default=True, help="At most this many SIGUSR1 deliveries.")
@click.option("--debug", is_flag=True, help="6.18: CONFIG_DEBUG_RSEQ=y; 6.19: the rseq_debug static key on.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--list", "list_only", is_flag=True, help="List the built-in scenarios with their invariants.")
@_plot_option("Also write distinct states against executions explored (.png or .svg).")
@_arch_option
def check_cmd(scenario: str | None, kernels: tuple[str, ...], preemptions: int, migrations: int, signals: int,
              debug: bool, as_json: bool, list_only: bool, plot: str | None, arch: str) -> int:
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
    from .check.stepfile import find_step_file, load_step_file, shipped_examples
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
    if scenario is None:
        raise BadInput(f"missing SCENARIO; accepted: {', '.join(checker.SCENARIOS)}, or a step file")
    chosen = _kernel_list(kernels, arch)
    if not chosen:
        raise BadInput(f"missing --kernel; accepted: {', '.join(kernel_names())}")
    if scenario in checker.SCENARIOS:
        sc = checker.SCENARIOS[scenario]()
    elif scenario.endswith(".rseq") or "/" in scenario:
        sc = load_step_file(find_step_file(scenario))
    else:
        raise BadInput(f"unknown scenario {scenario!r}; accepted: {', '.join(checker.SCENARIOS)}, "
                       "or a step file (*.rseq)")
    bounds = checker.Bounds(preemptions, migrations, signals)
    from .report.progress import exploration

    results = [exploration(lambda progress, kernel=kernel: checker.check(sc, kernel, bounds, debug=debug,
                                                                          progress=progress), quiet=as_json)
               for kernel in chosen]
    if plot:
        check_report.plot(plot, results)
    if as_json:
        docs = [check_report.as_json(r) for r in results]
        click.echo(json_document("check", docs[0]) if len(docs) == 1 else json_document("check", docs, key="results"))
    else:
        click.echo("\n\n".join(check_report.render(r) for r in results))
    return ExitStatus.FAILURE if any(r.violations for r in results) else ExitStatus.SUCCESS


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
