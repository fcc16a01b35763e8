#!/usr/bin/env python3
"""Shares of a process's CPU samples by the system call they were taken in.

    perf record -F 1999 -g -p PID -o perf.data -- sleep 10
    perf script -i perf.data -F comm,ip,sym | benches/syscall_share.py

Each sample's call chain (innermost frame first, as `perf script` prints it) is put under the
kernel function `do_syscall_64` called for it (`do_pwritev`, `__x64_sys_recvfrom`, ...), so the
kernel's work is counted against the call that asked for it: a socket write includes the
loopback delivery to its reader, a `pwritev` the page-cache copy and the block allocation.
Samples with no system call are "user" (the daemon's own code), "page fault" or "interrupt".
docs/benchmarks.md uses it to show where a cold fill's CPU goes.
"""
import collections
import sys


def classify(frames):
    """frames: symbol names, innermost first."""
    if "do_syscall_64" in frames:
        at = frames.index("do_syscall_64")
        return frames[at - 1] if at > 0 else "do_syscall_64"
    if any(f in ("asm_exc_page_fault", "exc_page_fault") for f in frames):
        return "page fault"
    if any("irq" in f for f in frames):
        return "interrupt"
    if any(f.startswith(("schedule", "finish_task_switch", "__schedule")) for f in frames):
        return "scheduler (no system call)"
    if any(f.startswith("entry_") for f in frames):
        return "kernel, other"
    return "user"


def main():
    counts = collections.Counter()
    frames = []

    def flush():
        if frames:
            counts[classify(frames)] += 1

    for line in sys.stdin:
        if not line.strip():
            flush()
            frames = []
        elif not line[0].isspace():
            # A sample's header line (its command name): its frames follow.
            flush()
            frames = []
        else:
            # "<address> <symbol>"; the symbol may be missing.
            parts = line.split(None, 1)
            frames.append(parts[1].strip() if len(parts) > 1 else "")
    flush()
    total = sum(counts.values())
    if not total:
        sys.exit("no samples on stdin (perf script -F comm,ip,sym)")
    print(f"{total} samples")
    for name, n in counts.most_common():
        if n * 200 >= total:  # 0.5 % and up
            print(f"{100 * n / total:6.1f} %  {name}")


if __name__ == "__main__":
    main()
