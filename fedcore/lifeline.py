"""Worker processes that die with the process that started them.

A worker of a ``ProcessPoolExecutor`` blocks on its task queue; if the node is killed (SIGKILL, OOM)
nothing closes that queue, and the workers live on holding the node's secret scalar. Call
:func:`die_with` in the pool's initializer: on Linux the kernel kills the worker when its parent dies
(``PR_SET_PDEATHSIG``), and a watchdog thread ends it as soon as the owner pid is gone (which also
covers the forkserver start method, where the worker's parent is the fork server, not the node).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading

import psutil

PR_SET_PDEATHSIG = 1


def die_with(owner_pid: int, poll_s: float = 0.5) -> None:
    """End this process when ``owner_pid`` ends (call it first thing in a worker)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watchdog below still works
    try:
        owner = psutil.Process(owner_pid)
    except psutil.NoSuchProcess:
        os._exit(1)

    def watch() -> None:
        while True:
            try:
                # is_running() compares the start time too, so a reused pid does not keep us alive
                if not owner.is_running() or owner.status() == psutil.STATUS_ZOMBIE:
                    os._exit(1)
            except psutil.Error:
                os._exit(1)
            threading.Event().wait(poll_s)

    threading.Thread(target=watch, name="lifeline", daemon=True).start()
