#!/usr/bin/env python3
"""The GitLab Runner cases of benches/load.sh: a cache archive downloaded and uploaded through
the daemon's S3 front, against the same transfer from its peers, in one run.

    runner_load.py SEAWEEDFS DAEMON_S3 DAEMON_PID NGINX_URL ARCHIVE REPEATS

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
"""
import os
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


def timed(action):
    start = time.monotonic()
    action()
    return time.monotonic() - start


def main():
    seaweedfs, daemon_s3, pid, nginx_url, archive, repeats = sys.argv[1:]
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

    rows = []  # (case, seconds of the daemon, seconds of the peer, peer name, peak RSS MiB)

    def case(name, peer_name, daemon_run, peer_run):
        ours, theirs, peaks = [], [], []
        for i in range(repeats):
            daemon.reset_peak()
            ours.append(timed(lambda: daemon_run(i)))
            peaks.append(daemon.peak_rss_mib())
            theirs.append(timed(lambda: peer_run(i)))
        rows.append((name, statistics.median(ours), statistics.median(theirs), peer_name, max(peaks)))

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

    print(f"\n{'runner case (median of %d)' % repeats:<34} {'daemon MiB/s':>13} {'peer':>10} {'peer MiB/s':>11} {'ratio':>7} {'peak RSS':>9}")
    for name, ours, theirs, peer, peak in rows:
        print(f"{name:<34} {length / ours / MIB:13.1f} {peer:>10} {length / theirs / MIB:11.1f} "
              f"{theirs / ours:7.2f} {peak:7.0f} MiB")


if __name__ == "__main__":
    main()
