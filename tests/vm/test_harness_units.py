"""The real-kernel harness without a VM or network: apt sources, versions, config fragments,
cache keys, the initramfs and the return channel."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from rseqlab.errors import BadInput
from rseqlab.vm import archive, channel, initramfs, kconfig, kernels, qemu


# ----------------------------------------------------------------------
# apt configuration and the archive index
# ----------------------------------------------------------------------
def test_archive_uri_deb822_skips_security(tmp_path):
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian-security\nSuites: x-security\n"
        "Components: main\n\nTypes: deb deb-src\nURIs: http://mirror.example/debian/\nSuites: x\n"
        "Components: main\nSigned-By: /k.gpg\n")
    assert archive.archive_uri(tmp_path) == "http://mirror.example/debian"


def test_archive_uri_deb822_disabled_stanza(tmp_path):
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "a.sources").write_text("Types: deb\nURIs: http://one.example/debian\nEnabled: no\n\n"
                                 "Types: deb\nURIs: http://two.example/debian\n")
    assert archive.archive_uri(tmp_path) == "http://two.example/debian"


def test_archive_uri_one_line_format(tmp_path):
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.example/debian x main\n"
        "deb-src http://src.example/debian x main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian x main\n")
    assert archive.archive_uri(tmp_path) == "http://one.example/debian"


def test_archive_uri_none(tmp_path):
    from rseqlab.errors import Unavailable
    with pytest.raises(Unavailable, match="no apt archive URI"):
        archive.archive_uri(tmp_path)


def test_sources_list_has_every_suite_both_kinds():
    text = archive.sources_list("http://m.example/debian")
    for suite in ("sid", "experimental", "trixie-backports"):
        for kind in ("deb", "deb-src"):
            assert f"{kind} [signed-by={archive.KEYRING}] http://m.example/debian {suite} main" in text


@pytest.mark.parametrize("deb,up", [("6.19.10-1~bpo13+1", "6.19.10"), ("7.1.8-2", "7.1.8"),
                                    ("7.3~rc7-1~exp1", "7.3~rc7"), ("1:7.0.4-1", "7.0.4"), ("7.3", "7.3")])
def test_upstream_of(deb, up):
    assert archive.upstream_of(deb) == up


def test_version_order_and_matching():
    vs = ["7.0.10", "6.19.6", "7.3", "7.0.9", "7.3~rc7", "6.19.14"]
    assert sorted(vs, key=archive.version_key) == ["6.19.6", "6.19.14", "7.0.9", "7.0.10", "7.3~rc7", "7.3"]
    assert archive.matches("6.19", "6.19.10") and archive.matches("6.19.10", "6.19.10")
    assert not archive.matches("6.19.1", "6.19.10")
    assert not archive.matches("6.1", "6.19.10")
    assert not archive.matches("7.3", "7.3~rc7") or archive.matches("7.3~rc7", "7.3~rc7")


SHOWSRC = """Package: linux
Binary: linux-doc
Version: 6.19.10-1~bpo13+1
Files:
 0123 159 linux_6.19.10-1~bpo13+1.dsc
Checksums-Sha256:
 aaaa 100 linux_6.19.10-1~bpo13+1.dsc
 %s 159200708 linux_6.19.10.orig.tar.xz
 cccc 300 linux_6.19.10-1~bpo13+1.debian.tar.xz

Package: linux-signed-amd64
Version: 6.19.10+1
Checksums-Sha256:
 dddd 10 linux-signed-amd64_6.19.10+1.tar.xz

Package: linux
Version: 7.3~rc7-1~exp1
Checksums-Sha256:
 %s 165730924 linux_7.3~rc7.orig.tar.xz
""" % ("b" * 64, "e" * 64)


def test_parse_showsrc():
    srcs = archive.parse_showsrc(SHOWSRC)
    assert [(s.debian, s.upstream, s.tarball, s.size) for s in srcs] == [
        ("6.19.10-1~bpo13+1", "6.19.10", "linux_6.19.10.orig.tar.xz", 159200708),
        ("7.3~rc7-1~exp1", "7.3~rc7", "linux_7.3~rc7.orig.tar.xz", 165730924)]
    assert srcs[0].sha256 == "b" * 64


def test_parse_binary_names_signed_first():
    text = ("linux-binary-unsigned-7.2.6+deb13-cloud-amd64 - Linux\n"
            "linux-binary-7.2.6+deb13-cloud-amd64 - Linux\n"
            "linux-binary-7.2.6+deb13-rt-amd64 - Linux\n"
            "linux-binary-7.3-cloud-amd64 - Linux\n"
            "linux-binary-6.19.10+deb13-amd64 - Linux\n")
    got = archive.parse_binary_names(text)
    assert got == {"7.2.6": ["linux-binary-7.2.6+deb13-cloud-amd64",
                             "linux-binary-unsigned-7.2.6+deb13-cloud-amd64"],
                   "7.3": ["linux-binary-7.3-cloud-amd64"]}


def test_fetch_source_reuses_verified_tarball_and_rejects_a_bad_one(tmp_path):
    data = b"not really a kernel"
    src = archive.Source("1.2.3-1", "1.2.3", "linux_1.2.3.orig.tar.xz", hashlib.sha256(data).hexdigest(), len(data))
    (tmp_path / src.tarball).write_bytes(data)
    a = archive.Archive(tmp_path / "apt")
    assert a.fetch_source(src, tmp_path) == tmp_path / src.tarball
    # A corrupted copy is thrown away (and the download then attempted, which fails offline).
    (tmp_path / src.tarball).write_bytes(b"X" * len(data))
    a._run = lambda *args, **kw: type("R", (), {"returncode": 100, "stderr": f"E: Failed to fetch http://m.example/pool/{src.tarball}  404  Not Found",
                                       "stdout": ""})()
    from rseqlab.errors import Unavailable
    with pytest.raises(Unavailable, match="404"):
        a.fetch_source(src, tmp_path)
    assert not (tmp_path / src.tarball).exists()


# ----------------------------------------------------------------------
# config fragments
# ----------------------------------------------------------------------
def test_parse_fragment_forms():
    got = kconfig.parse_fragment("CONFIG_A=y\nB\n# CONFIG_C is not set\n# comment\n\nCONFIG_D=m\nE=\"x\"\n")
    assert got == {"A": "y", "B": "y", "C": "n", "D": "m", "E": '"x"'}


@pytest.mark.parametrize("bad", ["CONFIG_A=", "has space=y", "-X"])
def test_parse_fragment_rejects(bad):
    with pytest.raises(BadInput, match="frag:1"):
        kconfig.parse_fragment(bad, origin="frag")


def test_verify_names_every_missing_option():
    options = kconfig.wanted(set(), {"EXTRA": "y", "GONE": "n"})
    config = {o: "y" for o in options}
    config.pop("RSEQ_STATS")
    config.pop("PVH")
    config["GONE"] = "y"
    config.pop("ENABLE_DEFAULT_TRACERS")  # optional: may vanish
    assert kconfig.verify(config, options) == ["CONFIG_GONE=n (have y)", "CONFIG_PVH", "CONFIG_RSEQ_STATS"]
    config.update(PVH="y", RSEQ_STATS="y", GONE="n")
    assert kconfig.verify(config, options) == []


def test_verify_reads_a_real_config_text():
    text = "CONFIG_RSEQ=y\n# CONFIG_RSEQ_STATS is not set\nCONFIG_HZ=250\n"
    assert kconfig.verify(kconfig.read_config(text), {"RSEQ": "y", "RSEQ_STATS": "y", "HZ": "250"}) == \
        ["CONFIG_RSEQ_STATS"]


def test_where_present_options_only_when_defined(tmp_path):
    (tmp_path / "init").mkdir()
    (tmp_path / "kernel").mkdir()
    (tmp_path / "init" / "Kconfig").write_text("config RSEQ\n\tbool\nconfig RSEQ_SLICE_EXTENSION\n\tbool\n")
    (tmp_path / "kernel" / "Kconfig.preempt").write_text("choice\nconfig PREEMPT_NONE\n\tbool\n")
    present = {o for o in kconfig.WHERE_PRESENT if kconfig.kconfig_defines(tmp_path, o)}
    assert present == {"RSEQ_SLICE_EXTENSION"}
    w = kconfig.wanted(present)
    assert w["RSEQ_SLICE_EXTENSION"] == "y" and "PREEMPT_LAZY" not in w
    assert all(w[o] == "y" for o in kconfig.STATS_FRAGMENT)


def test_config_hash_is_order_free_and_changes_with_options():
    a = kconfig.config_hash({"A": "y", "B": "y"})
    assert a == kconfig.config_hash({"B": "y", "A": "y"})
    assert len(a) == 12
    assert a != kconfig.config_hash({"A": "y", "B": "n"})
    assert a != kconfig.config_hash({"A": "y"})


# ----------------------------------------------------------------------
# the kernel cache
# ----------------------------------------------------------------------
def _fake(root: Path, name: str, **meta) -> None:
    d = root / name
    d.mkdir(parents=True)
    (d / meta["image"]).write_bytes(b"img")
    (d / "meta.json").write_text(json.dumps(meta))


def test_find_cached_prefers_newest_then_stats(tmp_path):
    _fake(tmp_path, "6.19.10-binary", version="6.19.10", kind="binary", image="vmlinuz")
    _fake(tmp_path, "6.19.10-stats-abc", version="6.19.10", kind="stats", image="vmlinux", config_hash="abc", extra={})
    _fake(tmp_path, "6.19.6-binary", version="6.19.6", kind="binary", image="vmlinuz")
    _fake(tmp_path, "7.1.8-stats-def", version="7.1.8", kind="stats", image="vmlinux", config_hash="def",
          extra={"X": "y"}, slice=True)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "meta.json").write_text("{not json")
    assert [c.path.name for c in kernels.cached(tmp_path)] == \
        ["6.19.6-binary", "6.19.10-binary", "6.19.10-stats-abc", "7.1.8-stats-def"]
    assert kernels.find_cached("6.19", root=tmp_path).path.name == "6.19.10-stats-abc"
    assert kernels.find_cached("6.19", stats=False, root=tmp_path).path.name == "6.19.10-binary"
    assert kernels.find_cached("6.19.6", stats=True, root=tmp_path) is None
    assert kernels.find_cached("7.1", stats=True, extra={}, root=tmp_path) is None
    k = kernels.find_cached("7.1", stats=True, extra={"X": "y"}, root=tmp_path)
    assert k.slice and k.config_hash == "def" and k.image.name == "vmlinux"


@pytest.mark.parametrize("v", ["6.19.10", "7.0", "7.3~rc7"])
def test_check_version_accepts(v):
    assert kernels.check_version(v) == v


@pytest.mark.parametrize("v", ["latest", "6", "6.19.10-1", "../x"])
def test_check_version_rejects(v):
    with pytest.raises(BadInput, match="not a kernel version"):
        kernels.check_version(v)


def test_cache_root_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert kernels.kernels_dir() == tmp_path / "rseqlab" / "kernels"


# ----------------------------------------------------------------------
# the initramfs
# ----------------------------------------------------------------------
def _busybox(tmp_path) -> Path:
    found = shutil.which("busybox")
    if found:
        return Path(found)
    p = tmp_path / "busybox"
    p.write_bytes(b"\x7fELF fake")
    p.chmod(0o755)
    return p


def test_initramfs_parses_back(tmp_path):
    bb = _busybox(tmp_path)
    r = initramfs.build("echo hi\n", files={"work/data": b"abc"}, busybox=bb)
    r.write(tmp_path / "i.cpio.gz")
    blob = (tmp_path / "i.cpio.gz").read_bytes()
    assert blob[:2] == b"\x1f\x8b"
    ents = initramfs.read_cpio(blob)
    assert ents["init"].data.decode().startswith("#!/bin/sh")
    assert stat.S_IMODE(ents["init"].mode) == 0o755 and stat.S_ISREG(ents["init"].mode)
    assert ents["payload"].data == b"echo hi\n"
    assert ents["work/data"].data == b"abc"
    assert ents["bin/busybox"].data == bb.read_bytes()
    assert stat.S_ISLNK(ents["bin/sh"].mode) and ents["bin/sh"].data == b"busybox"
    assert stat.S_ISCHR(ents["dev/console"].mode) and ents["dev/console"].rdev == (5, 1)
    for d in ("proc", "sys", "tmp", "work", "bin"):
        assert stat.S_ISDIR(ents[d].mode)
    # every parent directory precedes its children in the archive
    names = list(ents)
    for n in names:
        if "/" in n:
            assert names.index(n.rsplit("/", 1)[0]) < names.index(n)


def test_cpio_alignment_every_entry_on_4_bytes():
    r = initramfs.Initramfs()
    for i in range(1, 9):
        r.file("x" * i, b"y" * i)
    raw = r.cpio()
    assert len(raw) % 4 == 0
    ents = initramfs.read_cpio(raw)
    assert {k: v.data for k, v in ents.items()} == {"x" * i: b"y" * i for i in range(1, 9)}
    with pytest.raises(ValueError):
        initramfs.read_cpio(b"07070X" + raw[6:])


def test_init_script_sends_frame_on_second_port():
    text = initramfs.INIT
    assert "/dev/ttyS1" in text and "stty -F /dev/ttyS1 raw" in text
    assert channel.MAGIC.decode() in text and channel.TRAILER.decode() in text
    assert "mount -t tracefs" in text and "mount -t debugfs" in text
    assert text.index("/bin/sh /payload") < text.index("/dev/ttyS1") < text.index("poweroff -f")


@pytest.mark.skipif(not Path("/bin/ls").exists() or shutil.which("ldd") is None, reason="needs /bin/ls and ldd")
def test_dynamic_program_brings_its_libraries_and_loader(tmp_path):
    ls = Path("/bin/ls").resolve()
    assert not initramfs.is_static(ls)
    r = initramfs.Initramfs()
    name = initramfs.add_program(r, ls)
    assert name == str(ls)
    libs = initramfs.shared_libraries(ls)
    assert any("ld-linux" in lib for lib in libs) and any("libc.so" in lib for lib in libs)
    for lib in libs:
        assert r.entries[lib.strip("/")].data == Path(lib).read_bytes()


def test_static_detection_on_a_static_binary(tmp_path):
    """A program linked with ``gcc -static`` (libc6-dev's libc.a, which ``make`` installs)."""
    src = tmp_path / "hello.c"
    src.write_text("int main(void) { return 0; }\n")
    exe = tmp_path / "hello"
    subprocess.run(["gcc", "-static", "-o", str(exe), str(src)], check=True, capture_output=True)
    assert initramfs.is_static(exe)


def test_resolve_command_errors(tmp_path):
    with pytest.raises(BadInput, match="command not found"):
        initramfs.resolve_command("no-such-command-rseqlab")
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(BadInput, match="not an executable"):
        initramfs.resolve_command(str(f))


# ----------------------------------------------------------------------
# the return channel
# ----------------------------------------------------------------------
def _tgz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_channel_roundtrip_with_console_noise(tmp_path):
    payload = _tgz({"./a": b"\x00\x01\n\r\nbinary", "./dir/b": b"x" * 5000})
    blob = b"garbage\r\n" + channel.encode(payload) + b"after"
    assert channel.decode(blob) == payload
    names = channel.unpack(channel.decode(blob), tmp_path / "o")
    assert "./a" in names
    assert (tmp_path / "o" / "a").read_bytes() == b"\x00\x01\n\r\nbinary"
    assert (tmp_path / "o" / "dir" / "b").read_bytes() == b"x" * 5000


def test_channel_payload_containing_the_magic():
    payload = b"RSEQLAB-RETURN 3 " + b"0" * 64 + b"\n" + bytes(range(256))
    assert channel.decode(channel.encode(payload)) == payload


@pytest.mark.parametrize("cut", [1, 100, 4000])
def test_channel_truncation(cut):
    frame = channel.encode(b"z" * 5000)
    with pytest.raises(channel.ChannelError, match="truncated"):
        channel.decode(frame[:-(cut + len(channel.TRAILER) + 2)])


def test_channel_missing_trailer():
    frame = channel.encode(b"z" * 50)
    with pytest.raises(channel.ChannelError, match="no end marker"):
        channel.decode(frame[:-len(channel.TRAILER) - 1])


def test_channel_corruption():
    frame = bytearray(channel.encode(b"z" * 50))
    frame[len(frame) // 2] ^= 0x01
    with pytest.raises(channel.ChannelError, match="corrupted"):
        channel.decode(bytes(frame))


def test_channel_nothing_or_damaged_header():
    with pytest.raises(channel.ChannelError, match="sent no return data"):
        channel.decode(b"")
    with pytest.raises(channel.ChannelError, match="damaged header"):
        channel.decode(b"RSEQLAB-RETURN 12 nothex\n")


def test_channel_unpack_rejects_garbage(tmp_path):
    with pytest.raises(channel.ChannelError, match="cannot be unpacked"):
        channel.unpack(gzip.compress(b"not a tar at all" * 40), tmp_path)


# ----------------------------------------------------------------------
# QEMU command line and failure diagnosis
# ----------------------------------------------------------------------
def test_qemu_command_tcg(tmp_path):
    cmd = qemu.qemu_command(Path("/k"), Path("/i"), tmp_path / "c", tmp_path / "r", cpus=3, mem_mb=512, kvm=False)
    s = " ".join(cmd)
    assert "-accel tcg,thread=multi -cpu max" in s and "-smp 3" in s and "-m 512" in s
    assert "-no-reboot" in s and f"file:{tmp_path / 'c'}" in s and f"file:{tmp_path / 'r'}" in s
    assert cmd.index(f"file:{tmp_path / 'c'}") < cmd.index(f"file:{tmp_path / 'r'}")  # ttyS0 console, ttyS1 data
    assert "rdinit=/init" in cmd[-1] and "panic=-1" in cmd[-1]
    assert "-accel kvm -cpu host" in " ".join(qemu.qemu_command(Path("/k"), Path("/i"), tmp_path / "c",
                                                              tmp_path / "r", cpus=1, mem_mb=1, kvm=True))


def test_diagnose():
    assert qemu.diagnose("[ 1.0] Kernel panic - not syncing: Attempted to kill init!") == \
        "the guest kernel panicked: not syncing: Attempted to kill init!"
    assert qemu.diagnose(f"{initramfs.MARK_UP} x\nfoo invoked oom-killer: gfp_mask") == "the guest ran out of memory"
    assert qemu.diagnose("early boot only") == "the guest never reached /init"
    assert qemu.diagnose(f"{initramfs.MARK_UP} 7.0\n") is None


def test_returned_payload_names_the_console_cause():
    b = qemu.Boot(console="Kernel panic - not syncing: boom", returned=b"", seconds=1.0, accel="tcg", exit_code=0)
    with pytest.raises(qemu.GuestError, match="sent no return data.*panicked: not syncing: boom"):
        qemu.returned_payload(b)


# ----------------------------------------------------------------------
# CLI errors
# ----------------------------------------------------------------------
def test_cli_bad_version_is_one_line(run_cli):
    r = run_cli("kernels", "get", "latest")
    assert r.status == 2 and r.stderr.count("\n") == 1 and "not a kernel version" in r.stderr


def test_cli_bad_fragment_is_one_line(run_cli, tmp_path):
    f = tmp_path / "frag"
    f.write_text("CONFIG_OK=y\nthis is not an option\n")
    r = run_cli("kernels", "get", "6.19.10", "--config", str(f))
    assert r.status == 2 and f"{f}:2" in r.stderr and r.stderr.count("\n") == 1
    r = run_cli("kernels", "get", "6.19.10", "--config", str(tmp_path / "missing"))
    assert r.status == 2 and "cannot read config fragment" in r.stderr


def test_cli_vm_run_needs_a_command(run_cli, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    _fake(tmp_path / "rseqlab" / "kernels", "7.0.13-binary", version="7.0.13", kind="binary", image="vmlinuz")
    r = run_cli("vm", "run", "7.0.13")
    assert r.status == 2 and "no COMMAND given" in r.stderr
    r = run_cli("vm", "run", "7.0.13", "--cpus", "0", "--", "true")
    assert r.status == 2 and "--cpus" in r.stderr


# ----------------------------------------------------------------------
# probe verdicts, selftest plan, fidelity table
# ----------------------------------------------------------------------
def test_probe_verdicts():
    from rseqlab.vm import probe

    fixed = probe.verdict(probe.parse("register=0\ntail_after_register=0xa5a5a5a5\nflags_after_register=0\n"
                                      "rewrite_same_cpu=20/20\nrewrite_migrate=20/20\ntail_after_runs=0xa5a5a5a5\n"))
    assert fixed["registered"] and fixed["rewrites_cpu_id_start_same_cpu"] and not fixed["writes_bytes_28_31"]
    broken = probe.verdict(probe.parse("register=0\ntail_after_register=0\nrewrite_same_cpu=0/20\n"
                                       "rewrite_migrate=20/20\ntail_after_runs=0\n"))
    assert broken["rewrites_cpu_id_start_same_cpu"] is False and broken["writes_bytes_28_31"] is True
    assert broken["rewrites_cpu_id_start_migration"] is True
    partial = probe.verdict(probe.parse("register=-22\n"))
    assert partial["registered"] is False and partial["rewrites_cpu_id_start_same_cpu"] is None


def test_selftest_plan_drops_legacy_variants_without_the_option():
    from rseqlab.vm import selftest

    meta = {"built": list(selftest.PROGRAMS), "param_test_legacy_option": False}
    runs = selftest.plan(meta, 2)
    names = [r[0] for r in runs]
    assert names[:3] == list(selftest.SIMPLE)
    assert not any("-L" in r[1] for r in runs)
    assert names[-2:] == ["legacy_check", "slice_test"]
    assert runs[-1][2] == {"GLIBC_TUNABLES": "glibc.pthread.rseq=0"}
    with_l = selftest.plan({**meta, "param_test_legacy_option": True}, 2)
    assert len(with_l) == len(runs) + 4 * 8  # the legacy variant: every entry of TEST_LIST, every build
    assert all(env == {} for name, argv, env in runs if argv[0].startswith("param_test"))
    off = selftest.plan({**meta, "param_test_glibc_off": True}, 2)
    assert all(env == {"GLIBC_TUNABLES": "glibc.pthread.rseq=0"} for _, argv, env in off
               if argv[0].startswith("param_test"))
    text = selftest.payload(runs[:2])
    assert "/work/st/basic_test  > /tmp/out/st0.log" in text and "echo $? > /tmp/out/st1.rc" in text
    only = selftest.plan({"built": ["basic_test"], "param_test_legacy_option": True}, 2)
    assert [r[0] for r in only] == ["basic_test"]


def _row(counters: dict, tps: dict, stats=True) -> dict:
    v = {"statistics": stats, "failed": [],
         "counters": {k: {"observed": o, "predicted": p} for k, (o, p) in counters.items()},
         "tracepoints": {k: {"observed": o, "predicted": p} for k, (o, p) in tps.items()}}
    return {"kernel": "6.19.10", "kind": "stats", "workload": "w", "personality": "6.19", "validation": v}


def test_fidelity_targets_and_table():
    from rseqlab.vm import fidelity

    r = _row({"exit": (1000, 1019), "ids": (100, 103), "cs": (100, 104)},
             {"rseq_update": (1000, 1021), "rseq_ip_fixup": (0, 0)})
    assert fidelity.within_target(r) == ["cs", "tp:rseq_update"]
    table = fidelity.markdown([r])
    assert "| 6.19.10 (stats) | `6.19` | w | **1000 / 1019** |" in table
    assert table.splitlines()[0].count("|") == table.splitlines()[2].count("|")
    nostats = _row({}, {"rseq_update": (5, 5), "rseq_ip_fixup": (0, 0)}, stats=False)
    assert "| - | - |" in fidelity.markdown([nostats])


def test_fidelity_kernel_list_from_env(monkeypatch):
    from rseqlab.vm import fidelity

    monkeypatch.setenv("RSEQLAB_VM_KERNELS", "6.19.10:stats 7.0.9")
    assert fidelity.kernels_from_env() == [("6.19.10", True), ("7.0.9", False)]
    monkeypatch.delenv("RSEQLAB_VM_KERNELS")
    assert ("7.1.8", True) in fidelity.kernels_from_env()


def test_vm_payload_runs_guestrec_per_command():
    from rseqlab.vm import vmrun

    text = vmrun.payload([["/work/pingpong", "10"], ["/bin/echo", "a b"]], buffer_kb=512)
    assert "/work/guestrec --buffer-kb 512 /tmp/out/rec0 -- /work/pingpong 10 > /tmp/out/guestrec0.log" in text
    assert "/tmp/out/rec1 -- /bin/echo 'a b'" in text
    assert "echo $? > /tmp/out/guestrec1_status" in text


def test_fidelity_summary_counts_exact_and_within_target_per_kernel():
    from rseqlab.vm import fidelity

    det = fidelity.DETERMINISTIC[0][0]
    exact_row = {**_row({"exit": (10, 10)}, {"rseq_update": (1, 1), "rseq_ip_fixup": (0, 0)}), "workload": det}
    off_row = {**_row({"exit": (10, 11)}, {"rseq_update": (1, 1), "rseq_ip_fixup": (0, 0)}),
               "workload": fidelity.DETERMINISTIC[1][0]}
    off_row["validation"]["failed"] = ["exit"]
    other = _row({"cs": (4, 0)}, {"rseq_update": (1, 1), "rseq_ip_fixup": (4, 0)})
    lines = fidelity.summary([exact_row, off_row, other]).splitlines()
    assert len(lines) == 3  # header, rule, one kernel
    assert "| 1 of 2 | 0 of 1 |" in lines[2]
    assert f"{fidelity.DETERMINISTIC[1][0]}: exit" in lines[2] and "w: cs, tp:rseq_ip_fixup" in lines[2]


def test_make_fidelity_rewrites_only_the_readme_summary(tmp_path):
    from rseqlab.vm import fidelity

    readme = tmp_path / "README.md"
    shipped = (Path(__file__).parents[2] / "README.md").read_text()
    readme.write_text(shipped)
    fidelity.update_doc(readme, "| kernel |\n|---|\n| new |\n", fidelity.SUMMARY_START, fidelity.SUMMARY_END)
    new = readme.read_text()
    assert new.startswith(shipped[:shipped.index(fidelity.SUMMARY_START)])
    assert "| new |" in new and new.endswith(shipped[shipped.index(fidelity.SUMMARY_END):])


def test_env_runs_the_guests_env_and_copies_the_program_after_the_assignments():
    from rseqlab.vm import vmrun

    argv, programs, files = vmrun.guest_command(["env", "A=1", "B=2", "/bin/true", "x"])
    assert argv == ["/bin/env", "A=1", "B=2", "/bin/true", "x"]
    assert list(programs) == ["bin/true"]
    with pytest.raises(BadInput, match="no program after the assignments"):
        vmrun.guest_command(["env", "A=1"])


def test_a_workload_that_failed_in_the_guest_is_a_miss_and_is_marked():
    from rseqlab.vm import fidelity

    r = {**_row({"exit": (10, 10)}, {"rseq_update": (1, 1), "rseq_ip_fixup": (0, 0)}), "exit_status": 127}
    assert fidelity.exact(r) == ["exit status 127"] and fidelity.within_target(r) == ["exit status 127"]
    assert "w **(exit 127)**" in fidelity.markdown([r])
