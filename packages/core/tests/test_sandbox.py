"""The HumanEval sandbox: escapes fail the sample and harm nothing; ordinary programs behave as before.

Every hostile program here is bounded, so a broken guard makes a test fail without hurting the
machine: the fork test forks at most 200 children that exit at once, the 8 GB allocation is a lazy
``bytes`` (untouched zero pages), the touched allocation stops at 768 MB, signals are signal 0.
"""

import logging
import os
import socket
import tempfile
import time

import pytest

from leanlm.core.evaluation import sandbox
from leanlm.core.evaluation.sandbox import SandboxServer, run_sandboxed, sandbox_level, seccomp_supported

LEVEL, SECCOMP = sandbox_level()
needs_namespace = pytest.mark.skipif(LEVEL != "namespace", reason="no user namespaces here (rlimits level)")
needs_seccomp = pytest.mark.skipif(not SECCOMP, reason="no seccomp filter for this architecture")


@pytest.fixture(scope="module")
def servers():
    made: dict[str, SandboxServer] = {}
    yield made
    for server in made.values():
        server.close()


@pytest.fixture(params=["process", "server"])
def run(request, servers):
    """``run_sandboxed``, or the same through a pre-started ``SandboxServer`` (what HumanEval uses)."""
    if request.param == "process":
        return run_sandboxed

    def via_server(program, level="auto", **kwargs):
        if level not in servers:
            servers[level] = SandboxServer(level)
        return servers[level].run(program, **kwargs)

    return via_server


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "victim.txt"
    path.write_text("precious\n")
    return path


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Sandboxes create their folders here, so a test can see that nothing is left behind."""
    root = tmp_path / "sandboxes"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_correct_passes_wrong_fails_at_every_level(run):
    for level in ("rlimits", LEVEL):
        ok = run("def f(x):\n    return x + 1\nassert f(1) == 2\n", timeout=2.0, level=level)
        assert ok.passed and ok.status == "passed" and ok.level == level, ok
        bad = run("def f(x):\n    return x\nassert f(1) == 2, 'off by one'\n", level=level)
        assert not bad.passed and bad.status == "failed: off by one", bad
        err = run("1 / 0\n", level=level)
        assert err.status == "failed: division by zero", err


def test_threads_and_cwd_files_still_work(run, private_tmp):
    prog = (
        "import threading\nout = []\nt = threading.Thread(target=out.append, args=(1,))\nt.start()\n"
        "t.join()\nassert out == [1]\nopen('scratch.txt', 'w').write('x' * 1000)\n"
        "assert open('scratch.txt').read() == 'x' * 1000\n"
    )
    res = run(prog)
    assert res.passed, res
    assert list(private_tmp.iterdir()) == []  # the working directory was thrown away


@needs_namespace
@pytest.mark.parametrize(
    "escape",
    [
        "open({p!r}, 'w').write('pwned')",  # the truncation through open()
        "import posix\nposix.unlink({p!r})",  # past reliability_guard's os.unlink = None
        "import ctypes\nassert ctypes.CDLL(None).unlink({p!r}.encode()) == 0",
        "import ctypes\nassert ctypes.CDLL(None).truncate({p!r}.encode(), 0) == 0",
        "import posix\nposix.rename({p!r}, {p!r} + '.moved')",
    ],
)
def test_write_or_delete_outside_fails_and_harms_nothing(run, victim, escape):
    res = run(escape.format(p=str(victim)))
    assert not res.passed and res.level == "namespace", res
    assert victim.read_text() == "precious\n"


def test_rlimits_level_does_not_protect_files(victim):
    # what the README says the fallback does not guarantee, and proof the escape programs are real
    res = sandbox._run(f"open({str(victim)!r}, 'w').write('pwned')", 3.0, 1024, 16, 64, "rlimits", False)
    assert res.passed and victim.read_text() == "pwned"


@needs_namespace
def test_no_way_back_to_a_writable_mount(run, victim):
    # root inside the sandbox's user namespace: remounting or unmounting must not give write access
    prog = (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "libc.mount(None, b'/', None, 32 | 4096, None)\nlibc.umount2(b'/proc', 2)\n"
        f"open({str(victim)!r}, 'w').write('pwned')\n"
    )
    assert not run(prog).passed
    assert victim.read_text() == "precious\n"


@needs_namespace
def test_other_processes_and_network_are_out_of_reach(run):
    me = os.getpid()
    with socket.create_server(("127.0.0.1", 0)) as server:  # a listener the program could reach unsandboxed
        port = server.getsockname()[1]
        for prog in (
            f"import posix\nposix.kill({me}, 0)",  # signal 0: only asks whether the process exists
            f"import posix\nposix.stat('/proc/{me}')",
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).close()",
        ):
            res = run(prog)
            assert not res.passed, (prog, res)
    # its own /proc lists only its PID namespace: itself as PID 1
    assert run("import os\nassert [p for p in os.listdir('/proc') if p.isdigit()] == ['1']\n").passed


@needs_seccomp
@pytest.mark.parametrize("level", ["rlimits", LEVEL])
def test_fork_bomb_fails_the_sample(run, level):
    # bounded: 200 forks whose children exit at once, so a missing guard fails the test harmlessly
    for fork in ("import posix\nfork = posix.fork", "import ctypes\nfork = ctypes.CDLL(None).fork"):
        prog = (
            f"{fork}\nimport posix\nfor _ in range(200):\n    pid = fork()\n    if pid == 0:\n"
            "        posix._exit(0)\n    assert pid > 0, 'fork failed'\n    posix.waitpid(pid, 0)\n"
        )
        res = run(prog, level=level)
        assert not res.passed, (fork, res)
    exe = run("import posix\nposix.execv('/bin/true', ['true'])\n", level=level)
    assert exe.status == "failed: [Errno 1] Operation not permitted", exe


@pytest.mark.parametrize("level", ["rlimits", LEVEL])
def test_8gb_allocation_fails_the_sample(run, level):
    # bytes(n) is calloc'd: lazily mapped zero pages, harmless if the limit were missing
    res = run("b = bytes(8 << 30)\nassert len(b) == 8 << 30\n", memory_mb=512, level=level)
    assert not res.passed and res.status.startswith("failed"), res
    # touched memory: stops at the 256 MB limit (at most 768 MB if it did not)
    touch = "chunks = []\nfor _ in range(12):\n    chunks.append(bytearray(64 << 20))\n"
    assert not run(touch, memory_mb=256, level=level).passed
    assert run("b = bytearray(32 << 20)\n", memory_mb=256, level=level).passed


def test_time_limits_hold_even_when_sigalrm_is_ignored(run):
    assert run("while True:\n    pass\n", timeout=0.5).status == "timed out"
    for tail in ("while True:\n    pass\n", "import time\ntime.sleep(60)\n"):  # CPU limit, wall deadline
        start = time.monotonic()
        res = run(f"import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\n{tail}", timeout=0.5)
        assert res.status == "timed out" and time.monotonic() - start < 10, res


def test_file_and_disk_limits(run, private_tmp):
    big = run("open('big', 'wb').write(b'x' * (4 << 20))\n", file_size_mb=1)
    assert big.status.startswith("failed") and "File too large" in big.status, big
    if LEVEL == "namespace":  # the working directory is a tmpfs of disk_mb
        many = "for i in range(4):\n    open(f'f{i}', 'wb').write(b'x' * (3 << 20))\n"
        full = run(many, file_size_mb=4, disk_mb=8)
        assert "No space left" in full.status, full
    assert list(private_tmp.iterdir()) == []


def test_exit_without_verdict_and_output_flood_are_failures(run):
    res = run("import os\nos._exit(0)\n")
    assert res.status.startswith("failed") and "no verdict" in res.status, res
    flood = run("import os\nfor _ in range(100):\n    os.write(1, b'y' * (1 << 20))\n", file_size_mb=2)
    assert flood.status.startswith("failed"), flood  # its stdout log is capped by RLIMIT_FSIZE


def test_fallback_is_logged_with_what_holds(monkeypatch, caplog):
    real = sandbox._run

    def no_namespaces(program, timeout, memory_mb, file_size_mb, disk_mb, level, seccomp):
        if level == "namespace":
            return sandbox.SandboxResult("failed: sandbox setup: no user namespaces", level, seccomp, 3, 0.0)
        return real(program, timeout, memory_mb, file_size_mb, disk_mb, level, seccomp)

    monkeypatch.setattr(sandbox, "_run", no_namespaces)
    with caplog.at_level(logging.INFO, logger="leanlm.core.evaluation.sandbox"):
        assert sandbox._probe() == ("rlimits", seccomp_supported())
    text = caplog.text
    assert "no user namespaces" in text and "NOT guaranteed: write protection outside" in text


def test_unknown_level_is_refused():
    with pytest.raises(ValueError, match="unknown sandbox level"):
        run_sandboxed("pass", level="chroot")


@needs_seccomp
def test_seccomp_filter_shape():
    prog = sandbox._seccomp_program()
    assert prog[-1] == (0x06, 0, 0, 0x7FFF0000)  # default: allow
    assert prog[2] == (0x06, 0, 0, 0x80000000)  # a foreign syscall ABI kills the process
    for i, (code, jt, jf, _) in enumerate(prog):  # every jump lands inside the program
        if code & 0x07 == 0x05:
            assert i + 1 + max(jt, jf) < len(prog)


def test_every_denied_syscall_has_a_number():
    # a misspelt name in the deny list would be skipped silently by _seccomp_program
    for machine, (_, numbers) in sandbox._ARCHES.items():
        missing = [n for n in sandbox._DENIED if n not in numbers]
        assert missing == ([] if machine == "x86_64" else ["fork", "vfork"]), (machine, missing)
        assert "clone" in numbers and "clone3" in numbers


@pytest.mark.skipif(not SECCOMP or os.uname().machine != "x86_64", reason="x86_64 seccomp only")
def test_foreign_syscall_abi_kills_the_process(run):
    # getpid through the x32 table (bit 30 set): the filter kills rather than let another table through
    res = run("import ctypes\nctypes.CDLL(None).syscall(0x40000000 + 39)\n")
    assert "no verdict" in res.status and res.returncode in (-31, 128 + 31), res  # SIGSYS


def test_server_that_dies_falls_back_to_one_process_per_program():
    server = SandboxServer()
    try:
        assert server.run("assert 1 + 1 == 2\n").passed
        os.kill(server._proc.pid, 9)
        server._proc.wait()
        res = server.run("assert 1 + 1 == 2\n")
        assert res.passed and server._broken and server._proc is None, res
        assert server.run("1 / 0\n").status == "failed: division by zero"
    finally:
        server.close()
