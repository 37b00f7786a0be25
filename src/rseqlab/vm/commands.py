"""The CLI commands of the real-kernel harness: ``rseqlab kernels`` and ``rseqlab vm``.

``cli.py`` registers the two groups; everything they do lives in this package.
"""

from __future__ import annotations

import sys

import click

from ..errors import ExitStatus, command_status
from ..report import console, json_document
from ..report.formats import format_option


@click.group("kernels", invoke_without_command=True)
@format_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--offline", is_flag=True, help="Only what is cached; do not ask the archive.")
@click.pass_context
def kernels_group(ctx: click.Context, as_json: bool, offline: bool) -> None:
    """Real kernels: what the archive offers, what is cached, which personality models which.

    \b
    Examples:
      rseqlab kernels
      rseqlab kernels get 7.0.10
      rseqlab kernels get 6.19.10 --stats
    """
    if ctx.invoked_subcommand is not None:
        from ..cli_conflicts import given
        from ..errors import BadInput

        for name, option in (("as_json", "--json"), ("offline", "--offline")):
            if given(ctx, name):  # the listing's options; 'get' takes its own --json
                raise BadInput(f"kernels {option} applies to the listing, not to '{ctx.invoked_subcommand}'")
        return
    from . import listing

    data = listing.listing(offline=offline)
    if as_json:
        click.echo(json_document("kernels", data))
    else:
        listing.render(console(), data)


@kernels_group.command("get")
@format_option
@click.argument("version")
@click.option("--stats", is_flag=True, help="Build from source with CONFIG_RSEQ_STATS (tinyconfig + fragment).")
@click.option("--config", "fragment", type=click.Path(dir_okay=False),
              help="Extra config fragment (CONFIG_X=y lines) merged after rseqlab's own; implies --stats.")
@click.option("--json", "as_json", is_flag=True, help="Print the cached kernel as JSON.")
def kernels_get(version: str, stats: bool, fragment: str | None, as_json: bool) -> None:
    """Fetch a Debian binary kernel, or build one with statistics (--stats), into the cache."""
    from .kernels import KernelStore, parse_fragment_file

    extra = parse_fragment_file(fragment) if fragment else None
    k = KernelStore().get(version, stats=stats or extra is not None, fragment=extra)
    if as_json:
        click.echo(json_document("kernels-get", k.as_json(), key="kernel"))
    else:
        kind = "statistics build" + (" with the slice extension" if k.slice else "") if k.stats else "binary"
        click.echo(f"{k.version} ({kind}): {k.image}")


@click.group("vm")
def vm_group() -> None:
    """Boot real kernels under QEMU and run or record there."""


@vm_group.command("run", context_settings={"ignore_unknown_options": True})
@format_option
@click.argument("version")
@click.option("--cpus", type=int, default=2, show_default=True, help="Guest CPUs.")
@click.option("--mem", "mem_mb", type=int, default=1024, show_default=True, help="Guest memory, MiB.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="rseqlab.trace", show_default=True,
              help="Trace file to write (the serial log goes beside it, FILE.serial.log).")
@click.option("--stats", is_flag=True, help="Use (or build) a kernel with CONFIG_RSEQ_STATS.")
@click.option("--timeout", type=float, default=600, show_default=True, help="Seconds before the guest counts as hung.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def vm_run(version: str, cpus: int, mem_mb: int, output: str, stats: bool, timeout: float, as_json: bool,
           command: tuple[str, ...]) -> int:
    """Boot VERSION, record COMMAND there as `rseqlab record` does, write an ordinary trace.

    Exits with COMMAND's own status (128+N if signal N ended it), as record does.

    A shipped workload name (pingpong, sigstorm, munmaploop, threadmix) runs its static
    build; any other COMMAND is copied in with its shared libraries and loader.

    \b
    Examples:
      rseqlab vm run 6.19.10 -o pp.trace -- pingpong 2000
      rseqlab vm run 7.0.13 -- /bin/true
    """
    from . import vmrun

    res = vmrun.vm_run(version, list(command), output, cpus=cpus, mem_mb=mem_mb, stats=stats, timeout=timeout,
                       log=lambda m: click.echo(f"rseqlab: {m}", err=True))
    if as_json:
        click.echo(json_document("vm-run", res.summary))
    else:
        vmrun.render_summary(console(sys.stderr), res.summary)
    return command_status(res.summary.get("exit_status"))


@vm_group.command("selftest")
@format_option
@click.argument("version")
@click.option("--cpus", type=int, default=2, show_default=True, help="Guest CPUs.")
@click.option("--timeout", type=float, default=1200, show_default=True, help="Seconds before the guest counts as hung.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def vm_selftest(version: str, cpus: int, timeout: float, as_json: bool) -> int:
    """Build the kernel's own tools/testing/selftests/rseq (static) and run them in the guest."""
    from . import selftest as vm_st

    data = vm_st.run(version, cpus=cpus, timeout=timeout,
                     log=lambda m: click.echo(f"rseqlab: {m}", err=True))
    if as_json:
        click.echo(json_document("vm-selftest", data, key="selftest"))
    else:
        vm_st.render(console(), data)
    return ExitStatus.SUCCESS if data["passed"] else ExitStatus.FAILURE


@vm_group.command("probe")
@format_option
@click.argument("versions", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def vm_probe(versions: tuple[str, ...], as_json: bool) -> None:
    """The 32-byte registration check (cpu_id_start rewrite, bytes 28..31) on each kernel."""
    from . import probe

    rows = [probe.rseq32(v) for v in versions]
    if as_json:
        click.echo(json_document("vm-probe", rows, key="kernels"))
    else:
        probe.render(console(), rows)
