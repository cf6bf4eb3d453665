"""Starting PROG under the seccomp filter (INTERCEPTION.md §2.1).

The parent prepares everything (filter program, socketpair, sysfs tree, argv, environment),
then forks.  The child: enters the private mount namespace (when it can), sets
PR_SET_PDEATHSIG and NO_NEW_PRIVS, installs the filter with NEW_LISTENER | WAIT_KILLABLE_RECV,
sends the listener over the socketpair (sendmsg is not filtered) and execs PROG.  Between the
filter and the sendmsg it makes no filtered system call (an open would block forever).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass

from vfiosim.supervisor import bpf, syscalls
from vfiosim.supervisor.sysfs import enter_namespace
from vfiosim.uapi import seccomp as sc


@dataclass
class Launched:
    pid: int
    listener: int
    namespace_error: str | None  # None: the private tree is mounted


class LaunchError(Exception):
    pass


def launch(prog: str, argv: list[str], env: dict[str, str] | None,
           tree_root: str | None, build_tree: Callable[[str], None] | None = None
           ) -> Launched:
    """Fork and exec PROG under the filter.  ``tree_root``: enter the private mount
    namespace with the tree there; ``build_tree``: write it in the child's namespace first
    (sysfs.enter_namespace)."""
    program = bpf.Program(bpf.build_filter())
    fprog_addr = ctypes.addressof(program.fprog)
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    envb = os.environ if env is None else env
    flags = sc.SECCOMP_FILTER_FLAG_NEW_LISTENER | sc.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            parent_sock.close()
            status = b"ok"
            if tree_root is not None:
                try:
                    enter_namespace(tree_root, build_tree)
                except OSError as e:
                    status = b"nons " + str(e).encode(errors="replace")
            syscalls.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
            syscalls.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
            try:
                listener = syscalls.seccomp(sc.SECCOMP_SET_MODE_FILTER, flags, fprog_addr)
            except OSError as e:
                child_sock.sendall(b"fail seccomp: " + str(e).encode())
                os._exit(2)
            socket.send_fds(child_sock, [status], [listener])
            os.execve(prog, argv, envb)
        except OSError as e:
            os.write(2, f"vfiosim: {prog}: {e.strerror}\n".encode())
            os._exit(127)
        except BaseException:
            os._exit(127)
        os._exit(127)
    child_sock.close()
    try:
        parent_sock.settimeout(30)
        msg, fds, _flags, _addr = socket.recv_fds(parent_sock, 4096, 1,
                                                  socket.MSG_CMSG_CLOEXEC)
    except (OSError, TimeoutError) as e:
        _kill_reap(pid)
        raise LaunchError(f"could not start {prog}: {e}") from None
    finally:
        parent_sock.close()
    del program  # the child has its copy
    if not fds:
        _kill_reap(pid)
        text = msg.decode(errors="replace") or "the child exited before installing the filter"
        raise LaunchError(text)
    for extra in fds[1:]:
        os.close(extra)
    listener = fds[0]
    os.set_inheritable(listener, False)
    text = msg.decode(errors="replace")
    return Launched(pid, listener, None if text == "ok" else text[5:])


def _kill_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
