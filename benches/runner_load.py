#!/usr/bin/env python3
"""The GitLab Runner cases of benches/load.sh: a cache archive downloaded and uploaded through
the daemon's S3 front, against the same transfer from its peers, in one run.

    runner_load.py SEAWEEDFS DAEMON_S3 DAEMON_PID NGINX_URL ARCHIVE REPEATS [SEAWEEDFS_PID]

SEAWEEDFS is the backend (bucket "bench", keys AK / SK); DAEMON_S3 the daemon's S3 listener,
exposing bucket "runner" (stored under "runner/" in "bench", write-through) to RUNNER_KEY /
RUNNER_SECRET; NGINX_URL serves ARCHIVE from disk. Transfers are made by curl with presigned
URLs, as the runner's helper makes them; this script only presigns, times and prints.

Cases (each repeated, alternating with its peer; the median is reported):
  cold GET        daemon (read-through, key never read)  ÷  direct SeaweedFS GET
  warm GET        daemon (disk hit)                       ÷  nginx serving the file
  16-way cold     probe + 16 parallel 16 MiB ranges, daemon (key never read) ÷ same on SeaweedFS
  16-way warm     the same, daemon (disk hit)             ÷  same on SeaweedFS
  upload          PUT through the daemon (write-through: acknowledged once S3 has it)
                  ÷  direct PUT to SeaweedFS
The daemon's peak RSS is reset before each of its runs (/proc/PID/clear_refs) and read after.
CPU seconds per GiB moved are counted for every process in a run (from /proc/PID/stat and the
curl children's rusage): on a machine of two cores the large cases are CPU-bound, so these say
more than the timings about where a ratio comes from, and swing far less.
"""
import os
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

# The same boto3 client the runner tests presign with (path style, SigV4, us-east-1).
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "clients"))
from runner_presign import boto3_client as client  # noqa: E402

RUNNER_KEY, RUNNER_SECRET = "runner", "runner-secret-0123456789"
PART = 16 << 20
WAYS = 16
MIB = 1 << 20


def presign(s3, method, bucket, key):
    op = {"GET": "get_object", "PUT": "put_object"}[method]
    return s3.generate_presigned_url(op, Params={"Bucket": bucket, "Key": key}, ExpiresIn=3600)


def curl(*args):
    """Runs curl; returns (status, bytes moved)."""
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{size_upload}", *args],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    return int(out[0]), int(out[1]) + int(out[2])


def get_whole(url, length):
    status, moved = curl(url)
    assert status == 200 and moved == length, f"GET {url}: {status}, {moved} bytes"


def get_ranged(url, length):
    """The runner helper's parallel download: a one-byte probe, then PART-sized ranges,
    WAYS at a time."""
    status, _ = curl("-r", "0-0", url)
    assert status == 206, f"probe: {status}"
    ranges = [(at, min(at + PART, length) - 1) for at in range(0, length, PART)]
    with ThreadPoolExecutor(WAYS) as pool:
        for status, moved in pool.map(lambda r: curl("-r", f"{r[0]}-{r[1]}", url), ranges):
            assert status == 206, f"range: {status}"


def put(url, path, length):
    status, moved = curl("-X", "PUT", "-T", path, "-H", "Content-Type: application/octet-stream", url)
    assert status == 200 and moved == length, f"PUT: {status}, {moved} bytes"


class Daemon:
    def __init__(self, pid):
        self.pid = pid

    def reset_peak(self):
        with open(f"/proc/{self.pid}/clear_refs", "w") as f:
            f.write("5")

    def peak_rss_mib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")


def cpu_seconds(pid):
    """User and system CPU seconds a process has used so far (0 without a pid)."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        # Fields after the command name, which is in parentheses and may hold spaces.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Run:
    """One timed run: its wall time and the CPU seconds of the daemon, SeaweedFS and curl."""

    def __init__(self, action, daemon_pid, seaweedfs_pid):
        before = (cpu_seconds(daemon_pid), cpu_seconds(seaweedfs_pid), children_cpu_seconds())
        start = time.monotonic()
        action()
        self.seconds = time.monotonic() - start
        after = (cpu_seconds(daemon_pid), cpu_seconds(seaweedfs_pid), children_cpu_seconds())
        self.daemon, self.seaweedfs, self.curl = (b - a for a, b in zip(before, after))


def main():
    seaweedfs, daemon_s3, pid, nginx_url, archive, repeats = sys.argv[1:7]
    seaweedfs_pid = int(sys.argv[7]) if len(sys.argv) > 7 else None
    repeats = int(repeats)
    daemon = Daemon(int(pid))
    backend = client(seaweedfs, "AK", "SK")
    front = client(daemon_s3, RUNNER_KEY, RUNNER_SECRET)
    length = int(subprocess.run(["stat", "-c", "%s", archive], check=True, capture_output=True, text=True).stdout)

    # Every cold run reads a key nobody has read: copies of the archive, made in SeaweedFS.
    backend.upload_file(archive, "bench", "runner/archive-0")
    colds = [f"archive-cold-{i}" for i in range(repeats)] + [f"archive-ranged-{i}" for i in range(repeats)]
    for key in colds:
        backend.copy_object(Bucket="bench", Key=f"runner/{key}", CopySource={"Bucket": "bench", "Key": "runner/archive-0"})

    rows = []  # (case, the daemon's runs, the peer's runs, peer name, peak RSS MiB)

    def case(name, peer_name, daemon_run, peer_run):
        ours, theirs, peaks = [], [], []
        for i in range(repeats):
            daemon.reset_peak()
            ours.append(Run(lambda: daemon_run(i), daemon.pid, seaweedfs_pid))
            peaks.append(daemon.peak_rss_mib())
            # The peer's runs count the idle daemon too, which should be next to nothing.
            theirs.append(Run(lambda: peer_run(i), daemon.pid, seaweedfs_pid))
        rows.append((name, ours, theirs, peer_name, max(peaks)))

    daemon_get = lambda key: presign(front, "GET", "runner", key)
    direct_get = lambda key: presign(backend, "GET", "bench", f"runner/{key}")

    case("1 GiB GET, cold", "seaweedfs",
         lambda i: get_whole(daemon_get(f"archive-cold-{i}"), length),
         lambda i: get_whole(direct_get(f"archive-cold-{i}"), length))
    case("1 GiB GET, warm", "nginx",
         lambda i: get_whole(daemon_get(f"archive-cold-{i}"), length),
         lambda i: get_whole(nginx_url, length))
    case(f"{WAYS}-way ranged GET, cold", "seaweedfs",
         lambda i: get_ranged(daemon_get(f"archive-ranged-{i}"), length),
         lambda i: get_ranged(direct_get(f"archive-ranged-{i}"), length))
    case(f"{WAYS}-way ranged GET, warm", "seaweedfs",
         lambda i: get_ranged(daemon_get(f"archive-ranged-{i}"), length),
         lambda i: get_ranged(direct_get(f"archive-ranged-{i}"), length))
    case("1 GiB PUT, write-through", "seaweedfs",
         lambda i: put(presign(front, "PUT", "runner", f"upload-{i}"), archive, length),
         lambda i: put(presign(backend, "PUT", "bench", f"direct-upload-{i}"), archive, length))

    gib = length / (1 << 30)
    median = lambda runs, field: statistics.median(getattr(run, field) for run in runs)
    print(f"\n{'runner case (median of %d)' % repeats:<34} {'daemon MiB/s':>13} {'peer':>10} {'peer MiB/s':>11} {'ratio':>7} {'peak RSS':>9}")
    for name, ours, theirs, peer, peak in rows:
        mine, peers = median(ours, "seconds"), median(theirs, "seconds")
        print(f"{name:<34} {length / mine / MIB:13.1f} {peer:>10} {length / peers / MIB:11.1f} "
              f"{peers / mine:7.2f} {peak:7.0f} MiB")
    if seaweedfs_pid is not None:
        print(f"\n{'CPU seconds per GiB (median)':<34} {'daemon':>8} {'seaweedfs':>10} {'curl':>6} {'total':>6}"
              f"   {'peer run: seaweedfs':>19} {'curl':>6} {'total':>6}")
        for name, ours, theirs, peer, _ in rows:
            cells = [median(ours, f) / gib for f in ("daemon", "seaweedfs", "curl")]
            peer_cells = [median(theirs, f) / gib for f in ("seaweedfs", "curl")]
            print(f"{name:<34} {cells[0]:8.2f} {cells[1]:10.2f} {cells[2]:6.2f} {sum(cells):6.2f}"
                  f"   {peer_cells[0]:19.2f} {peer_cells[1]:6.2f} {sum(peer_cells):6.2f}")


if __name__ == "__main__":
    main()
