"""CPU metering from /proc: process trees, per-thread and machine-wide ticks, and CpuMeter."""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
SAMPLE_INTERVAL = 0.05
PR_SET_CHILD_SUBREAPER = 36

ProcessTable = dict[int, tuple[int, str, int, int]]


def process_table() -> ProcessTable:
    """pid -> (ppid, state, own utime+stime, utime+stime of its reaped children) in ticks, from /proc."""
    table: ProcessTable = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            # after the ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
            #                utime stime cutime cstime
            table[int(entry)] = (int(fields[1]), fields[0], int(fields[11]) + int(fields[12]),
                                 int(fields[13]) + int(fields[14]))
        except (OSError, IndexError, ValueError):
            continue
    return table


def descendants(pid: int, table: ProcessTable | None = None) -> list[int]:
    """The pids of a process's children, their children and so on."""
    table = process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for child, (ppid, *_) in table.items():
        children.setdefault(ppid, []).append(child)
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo and len(found) < len(table):
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def machine_ticks() -> tuple[int, int]:
    """(busy, idle) ticks of all CPUs together, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values[:8]) - idle, idle  # user nice system idle iowait irq softirq steal


def thread_ticks(pid: int) -> dict[int, int]:
    """tid -> utime+stime of each thread of a process."""
    ticks: dict[int, int] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return ticks
    for tid in tids:
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks[int(tid)] = int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return ticks


def busy_processes(seconds: float = 1.0, threshold: float = 0.2) -> list[str]:
    """Processes using more than threshold of a core over a short sample (to spot a noisy machine)."""
    before = process_table()
    time.sleep(seconds)
    after = process_table()
    found = []
    for pid, (_, _, ticks, _) in after.items():
        share = (ticks - before.get(pid, (0, "", ticks, 0))[2]) / TICKS / seconds
        if share >= threshold and pid != os.getpid():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                cmd = "?"
            found.append(f"pid {pid} {share * 100:.0f}% {cmd[:80]}")
    return found


def become_subreaper() -> bool:
    """Orphans of our processes (sshd's per-connection children, ssh's -J child) become our children,
    so that they stay in /proc as zombies until we reap them and their final CPU time can be read."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap_adopted(keep: set[int]) -> None:
    """Reap our zombie children that we did not start (orphans adopted as subreaper)."""
    me = os.getpid()
    for pid, (ppid, state, *_) in process_table().items():
        if ppid == me and state == "Z" and pid not in keep:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


class CpuMeter:
    """CPU seconds used by process trees during a measurement, by group name, from /proc.

    A background thread walks the trees every SAMPLE_INTERVAL to learn which group each new process
    belongs to. The time of a process that its parent reaps ends up in the parent's cumulative
    children time, and so, up the tree, in its root's; a process whose parent exits first (sshd's
    post-auth child, ssh's -J child) is adopted by this script (a child subreaper) and stays a zombie,
    with its final own and children times, until reap_adopted(). So a group's CPU is: the growth of
    its root's own + children time, plus the final times of the zombies it left to this script.
    Only an orphan that lived less than one interval is not attributed ("unattributed").
    """

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = dict(roots)
        self.group: dict[int, str] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.machine0, self.self0 = machine_ticks(), os.times()
        table = self._sample()
        self.initial = {pid: table[pid][2] + table[pid][3] for pid in self.roots.values() if pid in table}
        self.thread.start()

    def add_root(self, name: str, pid: int) -> None:
        """A root that starts after metering began (the ssh client): all its time counts."""
        with self.lock:
            self.roots[name] = pid
            self.initial[pid] = 0
        self._sample()

    def _sample(self) -> ProcessTable:
        table = process_table()
        with self.lock:
            for name, root in self.roots.items():
                for pid in [root, *descendants(root, table)]:
                    self.group.setdefault(pid, name)
        return table

    def _run(self) -> None:
        while not self.stopping.wait(SAMPLE_INTERVAL):
            self._sample()

    def settled(self) -> bool:
        """Every process that came and went has exited and is reaped, or is a zombie left to us."""
        table = process_table()
        roots = set(self.roots.values())
        with self.lock:
            pids = [pid for pid in self.group if pid not in roots]
        return all(pid not in table or (table[pid][1] == "Z" and table[pid][0] == os.getpid()) for pid in pids)

    def stop(self) -> dict[str, float]:
        """CPU seconds by group; also "bench" (this process), "machine_busy" and "machine_idle" (all cores)."""
        self.stopping.set()
        self.thread.join(timeout=5)
        table = self._sample()
        (busy1, idle1), self1 = machine_ticks(), os.times()
        totals: dict[str, float] = {}
        for name, pid in self.roots.items():
            if pid in table:
                ticks = table[pid][2] + table[pid][3] - self.initial.get(pid, 0)
                totals[name] = totals.get(name, 0.0) + ticks / TICKS
        roots = set(self.roots.values())
        me = os.getpid()
        for pid, (ppid, state, own, children) in table.items():
            if ppid == me and state == "Z" and pid not in roots:
                name = self.group.get(pid, "unattributed")
                totals[name] = totals.get(name, 0.0) + (own + children) / TICKS
        totals["bench"] = (self1.user + self1.system) - (self.self0.user + self.self0.system)
        totals["machine_busy"] = (busy1 - self.machine0[0]) / TICKS
        totals["machine_idle"] = (idle1 - self.machine0[1]) / TICKS
        return totals
