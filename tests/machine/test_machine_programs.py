"""The simulated machine as the ported selftests use it: determinism, bad input, mm_cid,
copy-on-write after fork, a signal handler's own critical section (C-06)."""

from __future__ import annotations

import pytest

from rseqlab.errors import BadInput
from rseqlab.kernel._task import SIGUSR1
from rseqlab.machine.machine import MachineConfig, make_machine
from rseqlab.machine.sim import Prio
from rseqlab.userprog import primitives as P
from rseqlab.userprog.libc import Glibc


def counter_workload(kernel: str, seed: int, threads: int = 6, reps: int = 1000):
    m = make_machine(kernel, cpus=2, seed=seed, hz=1000, slice_ns=1_000_000)
    shared = {}

    def worker(th):
        for _ in range(reps):
            while True:
                cpu = P.current_index(th)
                if P.load_add_store(th, shared["base"] + 8 * cpu, 1, cpu, P.CsOptions(loops={3: 10000})) == 0:
                    break
        return th.local.get("nr_abort", 0)

    def main(th):
        shared["base"] = th.image.alloc(64)
        ts = [th.spawn_thread(worker) for _ in range(threads)]
        aborts = [th.join(t) for t in ts]
        return sum(th.load(shared["base"] + 8 * c) for c in range(2)), aborts

    st = m.spawn(main, runtime=Glibc())
    m.run()
    return st.result, m.kernel.stats().as_dict(), m.now, m.switches


@pytest.mark.parametrize("kernel", ["6.18", "6.19"])
def test_same_seed_identical_run_different_seeds_differ(kernel):
    a, b = counter_workload(kernel, 7), counter_workload(kernel, 7)
    assert a == b
    assert a[0][0] == 6 * 1000
    others = [counter_workload(kernel, s) for s in (1, 2, 3)]
    assert any(o[1:] != a[1:] for o in others)  # tick phases differ: so do the interleavings
    assert all(o[0][0] == 6 * 1000 for o in others)


@pytest.mark.parametrize("config", [dict(cpus=0), dict(cpus=2, nodes=3), dict(hz=0), dict(slice_ns=0)])
def test_impossible_machines_are_bad_input(config):
    with pytest.raises(BadInput, match="impossible machine"):
        make_machine("6.19", **config)


def test_more_threads_than_memory_is_bad_input():
    m = make_machine("6.19", cpus=1, max_threads=3)

    def main(th):
        for _ in range(5):
            th.spawn_thread(lambda t: t.compute(10))

    m.spawn(main, runtime=Glibc())
    with pytest.raises(BadInput, match="more than 3 live threads"):
        m.run()


@pytest.mark.parametrize("kernel", ["6.18", "6.19"])
@pytest.mark.parametrize("threads", [3, 8])
def test_mm_cid_unique_among_running_threads(kernel, threads):
    m = make_machine(kernel, cpus=4, seed=1, hz=1000, slice_ns=200_000)
    seen: list[tuple[int, ...]] = []

    def check() -> None:
        running = [c.curr for c in m.cpus if c.curr is not None and not c.dispatching and c.curr.proc.pid == pid[0]]
        cids = tuple(sorted(t.kt.mm_cid for t in running))
        assert len(set(cids)) == len(cids), f"duplicate mm_cid among running threads: {cids}"
        assert all(0 <= c < min(threads + 1, 4) for c in cids), cids
        seen.append(cids)
        if m.running:
            m.sim.after(50_000, check, Prio.TIMER)

    def worker(th):
        for _ in range(20):
            th.compute(100_000)
            th.sched_yield()

    def main(th):
        for t in [th.spawn_thread(worker) for _ in range(threads)]:
            th.join(t)

    pid = [m.spawn(main, runtime=Glibc()).proc.pid]
    m.sim.after(50_000, check, Prio.TIMER)
    m.run()
    assert len(seen) > 20 and max(len(c) for c in seen) == min(threads, 4)


@pytest.mark.parametrize("kernel", ["6.18", "6.19"])
def test_cow_fault_after_fork_on_a_user_store(kernel):
    m = make_machine(kernel, cpus=2, seed=0)
    out = {}

    def child(th):
        irqs = m.user_irqs
        th.store(out["addr"], 2)  # write to a COW-shared page: a fault, then a private copy
        out["child_faults"] = m.user_irqs - irqs
        out["child_sees"] = th.load(out["addr"])

    def main(th):
        out["addr"] = th.image.alloc(8)
        th.store(out["addr"], 1)
        c = th.fork(child)
        th.join(c)
        out["parent_sees"] = th.load(out["addr"])

    m.spawn(main, runtime=Glibc())
    m.run()
    assert out == {"addr": out["addr"], "child_faults": 1, "child_sees": 2, "parent_sees": 1}


@pytest.mark.parametrize("kernel", ["6.18", "6.19"])
def test_signal_handler_runs_its_own_section_on_the_same_data(kernel):
    """C-06: the handler's op commits, the interrupted op is aborted and retried, the sum is exact."""
    m = make_machine(kernel, cpus=2, seed=0)
    state = {"handler_ops": 0}
    opts = P.CsOptions(loops={3: 300_000})  # 100 us inside each section

    def add_one(th) -> None:
        while True:
            cpu = P.current_index(th)
            if P.load_add_store(th, state["counter"] + 8 * cpu, 1, cpu, opts) == 0:
                return

    def handler(th, sig):
        state["handler_ops"] += 1
        add_one(th)

    def victim(th):
        for _ in range(20):
            add_one(th)
        return th.local.get("nr_abort", 0)

    def main(th):
        state["counter"] = th.image.alloc(16)
        th.sigaction(SIGUSR1, handler)
        v = th.spawn_thread(victim, affinity={1})
        for _ in range(5):
            th.sleep(300_000)
            th.kill(v, SIGUSR1)
        state["aborts"] = th.join(v)
        state["sum"] = th.load(state["counter"]) + th.load(state["counter"] + 8)

    m.spawn(main, runtime=Glibc(), affinity={0})
    m.run()
    assert state["handler_ops"] == 5
    assert state["sum"] == 20 + 5
    assert state["aborts"] >= 1 and m.kernel.stats().fixup >= 1


def test_membarrier_ipi_aborts_a_section_on_the_target_cpu():
    from rseqlab.userprog.api import MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ as RSEQ
    from rseqlab.userprog.api import MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ as REG

    for kernel in ("6.18", "6.19", "6.19:no-cs-check"):
        m = make_machine(kernel, cpus=2, seed=0)
        res = {}

        def spinner(th):
            cpu = P.current_index(th)
            res["ret"] = P.load_add_store(th, res["c"] + 8 * cpu, 1, cpu, P.CsOptions(loops={3: 30_000}))

        def main(th):
            res["c"] = th.image.alloc(16)
            th.membarrier(REG)
            t = th.spawn_thread(spinner, affinity={1})
            th.compute(3_000)
            res["mb"] = th.membarrier(RSEQ)
            th.join(t)

        m.spawn(main, runtime=Glibc(), affinity={0})
        m.run()
        assert res["mb"] == 0
        assert res["ret"] == (0 if kernel == "6.19:no-cs-check" else -1), kernel


def test_machine_config_rejects_bad_costs():
    with pytest.raises(BadInput):
        MachineConfig(insn_ns=0).validate()


@pytest.mark.parametrize("kernel", ["6.18", "6.19", "7.1"])
def test_signal_pending_at_a_new_threads_first_return_runs_its_handler(kernel):
    """A thread signalled before it first ran takes the handler on its first exit to user,
    then resumes its program (issue 17: this reached the machine's consistency check)."""
    m = make_machine(kernel, cpus=1, seed=0)
    seen = []

    def handler(th, sig):
        seen.append(("handler", sig))

    def child(th):
        seen.append(("child runs",))
        return 7

    def main(th):
        th.sigaction(SIGUSR1, handler)
        c = th.spawn_thread(child)
        th.kill(c, SIGUSR1)  # one CPU, main keeps it: the child has not run yet
        return th.join(c)

    st = m.spawn(main, runtime=Glibc())
    m.run()
    assert seen == [("handler", SIGUSR1), ("child runs",)]
    assert st.result == 7


def test_signal_storm_with_two_instances_runs_on_every_kernel():
    """The built-in signals workload with `instances = 2` (issue 17 class 2)."""
    from rseqlab.compare import compare
    from rseqlab.kernel import PERSONALITIES
    from importlib import resources

    from rseqlab.workloads.schema import parse_workload

    text = resources.files("rseqlab.workloads").joinpath("builtin", "signals.toml").read_text()
    text = text.replace("[[process]]\n", "[[process]]\ninstances = 2\n", 1)
    text = text.replace("repeat = 5000", "repeat = 200").replace("repeat = 500", "repeat = 20")
    assert "instances = 2" in text
    w = parse_workload(text, "signals-x2")
    results = compare(w, list(PERSONALITIES), seed=0)
    for r in results.values():
        assert r.counters["signal"] > 0


def _fork_child_first_return(kernel: str, runtime):
    """A registered process forks once; the child's stats, COW-break count and TID word."""
    from rseqlab.userprog.libc import GLIBC_TID_OFFSET, librseq_register_current_thread

    m = make_machine(kernel, cpus=2, seed=0)
    out = {}

    def child(th):
        out["stats"] = th.kt.stats.as_dict()
        out["cow_breaks"] = th.mm.faults.cow_breaks
        out["tid_word"] = th.mm.peek(th.st.tls + GLIBC_TID_OFFSET, 4)
        out["pid"] = th.kt.pid

    def main(th):
        if runtime is None:
            assert librseq_register_current_thread(th) == 0
        th.join(th.fork(child))

    m.spawn(main, runtime=runtime)
    m.run()
    return out


@pytest.mark.parametrize("kernel", ["6.19", "7.0", "7.1"])
def test_glibc_fork_child_stores_its_tid_before_the_first_exit(kernel):
    """schedule_tail() (kernel/sched/core.c) stores the TID at set_child_tid with faults enabled;
    glibc's fork passes CLONE_CHILD_SETTID with &THREAD_SELF->tid, on the rseq area's page, so
    the child's first exit finds that page private: the fast path writes the IDs."""
    out = _fork_child_first_return(kernel, Glibc())
    assert out["tid_word"] == out["pid"]
    assert out["cow_breaks"] == 1  # the TID store, before anything in user space ran
    assert out["stats"]["slowpath"] == 0 and out["stats"]["fastpath"] >= 1 and out["stats"]["ids"] >= 1


@pytest.mark.parametrize("kernel", ["6.19", "7.0", "7.1"])
def test_raw_fork_child_without_settid_faults_into_the_slow_path(kernel):
    """A raw clone() without CLONE_CHILD_SETTID (librseq's own registration, no libc runtime):
    the page is still copy-on-write at the first exit, whose rseq store faults with page faults
    disabled, so the slow path writes the IDs (explain fork-child-cow)."""
    out = _fork_child_first_return(kernel, None)
    assert out["tid_word"] == 0
    assert out["stats"]["slowpath"] == 1


def test_glibc_fork_child_on_6_18_stores_its_tid():
    out = _fork_child_first_return("6.18", Glibc())
    assert out["tid_word"] == out["pid"] and out["cow_breaks"] == 1
