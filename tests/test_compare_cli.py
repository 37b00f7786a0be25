"""``rseqlab compare`` on the command line."""

from __future__ import annotations


def test_default_table(run_cli):
    r = run_cli("compare", "-w", "pingpong")
    assert r.status == 0, r.stderr
    for row in ("exit to user", "signal checks", "slowpath runs", "fastpath runs", "id updates", "cs checks",
                "cs cleared", "cs fixup", "user reads", "user writes", "est. rseq kernel time"):
        assert row in r.stdout


def test_json_keys_and_determinism(run_cli):
    a = run_cli("compare", "-w", "signals", "--json", "--seed", "5")
    b = run_cli("compare", "-w", "signals", "--json", "--seed", "5")
    assert a.stdout == b.stdout
    data = a.json
    assert data["workload"] == "signals" and data["seed"] == 5
    assert set(data["kernels"]) == {"6.18", "6.19"}  # the default pair
    assert set(data["kernels"]["6.19"]) == {"exit", "signal", "slowpath", "fastpath", "ids", "cs", "clear",
                                            "fixup", "user_reads", "user_writes", "rseq_update",
                                            "rseq_ip_fixup"}


def test_whatif_kernel_and_plot(run_cli, tmp_path):
    out = tmp_path / "c.svg"
    r = run_cli("compare", "-w", "signals", "-k", "6.18,6.19:always-rewrite-ids", "--plot", str(out))
    assert r.status == 0, r.stderr
    assert out.read_text().startswith("<?xml")
    assert run_cli("compare", "-w", "signals", "--plot", str(tmp_path / "c.gif")).status == 2


def test_bad_workload_file_is_one_line_exit_2(run_cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\ndescription = "d"\nsource = "s"\n[machine]\ncpus = -1\n')
    r = run_cli("compare", "-w", str(bad))
    assert r.status == 2
    assert r.stderr.strip() == f"rseqlab: error: {bad}: machine.cpus: expected 1..512, got -1"


def test_unknown_kernel(run_cli):
    r = run_cli("compare", "-w", "signals", "-k", "6.18,5.10")
    assert r.status == 2 and "5.10" in r.stderr and r.stderr.count("\n") == 1
