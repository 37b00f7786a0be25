"""The events a recording holds: the recorder's table (which the trace.dat and perf.data readers
check too) and the command lines with which trace-cmd and perf record the same."""

from __future__ import annotations

from ..errors import BadInput

#: Events of the main (pid-filtered) instance. ``required`` ones must exist.
EVENTS = {
    ("sched", "sched_switch"): True,
    ("sched", "sched_process_fork"): True,
    ("sched", "sched_process_exec"): True,
    ("sched", "sched_process_exit"): True,
    ("task", "task_newtask"): False,
    ("raw_syscalls", "sys_enter"): True,
    ("raw_syscalls", "sys_exit"): True,
    ("signal", "signal_deliver"): True,
    ("rseq", "rseq_update"): True,
    ("rseq", "rseq_ip_fixup"): True,
    ("irq_vectors", "local_timer_entry"): False,
    ("irq_vectors", "reschedule_entry"): False,
    ("irq_vectors", "call_function_entry"): False,
    ("irq_vectors", "call_function_single_entry"): False,
    ("irq_vectors", "irq_work_entry"): False,
    ("irq", "irq_handler_entry"): False,
    ("exceptions", "page_fault_user"): False,
    # A fault in kernel mode (x86), e.g. the exit's store into the rseq area of a copy-on-write
    # page: where a preemption lands in the rseq work of an exit (trace/replay.py).
    ("exceptions", "page_fault_kernel"): False,
    # Present only where user context tracking is on (see Kind.USER_ENTER): exact returns.
    ("context_tracking", "user_enter"): False,
    ("context_tracking", "user_exit"): False,
}
#: Events most kernels do not have (context tracking is off unless forced or nohz_full): left out
#: of the printed trace-cmd/perf command lines, which fail on an event the kernel lacks.
WHERE_CONFIGURED = (("context_tracking", "user_enter"), ("context_tracking", "user_exit"))
MIGRATION_EVENT = ("sched", "sched_migrate_task")


def recorded_events() -> list[tuple[str, str]]:
    """Every event a recording should hold (this recorder's table), in the table's order."""
    return [*EVENTS, MIGRATION_EVENT]


def required_events() -> list[tuple[str, str]]:
    """The events without which a recording cannot be replayed."""
    return [key for key, required in EVENTS.items() if required] + [MIGRATION_EVENT]


#: ``record --print-command TOOL``: how another recorder records what this one does. Both trace
#: every CPU while COMMAND runs (migrations fire in the mover's context, so a pid filter would
#: drop some); ``mono`` is this recorder's trace clock.
TOOL_COMMANDS = {
    "trace-cmd": ("trace-cmd record -C mono -b {buffer_kb}", " -- COMMAND"),
    "perf": ("perf record -a -k CLOCK_MONOTONIC -m 1024", " -- COMMAND"),
}


def tool_command(tool: str, events: list[tuple[str, str]] | None = None, buffer_kb: int = 32768) -> str:
    """The command line with which ``tool`` (``trace-cmd`` or ``perf``) records ``events``
    (default: every event of :func:`recorded_events`)."""
    if tool not in TOOL_COMMANDS:
        raise BadInput(f"--print-command: unknown tool {tool!r} (expected one of: {', '.join(TOOL_COMMANDS)})")
    head, tail = TOOL_COMMANDS[tool]
    chosen = [e for e in recorded_events() if e not in WHERE_CONFIGURED] if events is None else events
    return head.format(buffer_kb=buffer_kb) + "".join(f" -e {s}:{e}" for s, e in chosen) + tail


def missing_events_message(name: str, present, tool: str) -> str | None:
    """One line naming the required events ``present`` lacks and the ``tool`` command line that
    records them all (None: nothing is missing)."""
    missing = [k for k in required_events() if k not in present]
    if not missing:
        return None
    return (f"{name}: the recording lacks events the replay needs ({', '.join(f'{s}:{e}' for s, e in missing)}); "
            f"record them with: {tool_command(tool)}")
