#!/usr/bin/env python3
"""What a stalled client costs the daemon: memory and file descriptors per connection.

Starts the daemon binary given as the first argument (default: target/release/build-cache-proxy)
with default limits, except that the body deadline is long so the uploads stay open while they
are measured and the cap on uploads in progress (256 by default) is raised above N. Opens N PUTs (default 300) that each declare 1 MiB and send all of it but
the last byte, spread over loopback source addresses so the per-IP caps (64 uploads, 256
connections) are not what stops them. Once every upload has been read by the daemon (its
`uploads_in_progress` gauge equals N and its RSS has settled), prints the daemon's RSS and
descriptor counts before and during, and the difference per upload.

With `heads` as the third argument, the N connections instead each send a request head of
15 KiB (just under `limits.max_header_bytes`, 16 KiB) without its final blank line: the most a
slow-header client can make the daemon hold (the head deadline is made long for this).

    python3 benches/stalled_clients.py [BINARY] [N] [uploads|heads]
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

BODY = 1 << 20
PER_ADDRESS = 50

CONFIG = """
[listen]
gradle = "127.0.0.1:0"
admin = "127.0.0.1:0"
[limits]
body_stall_timeout = "10m"
header_timeout = "5m"
max_uploads = 1024
"""
HEAD_BYTES = 15 << 10


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def metric(admin, series):
    text = urllib.request.urlopen(f"http://{admin}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[1])
    return 0.0


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/build-cache-proxy"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    mode = sys.argv[3] if len(sys.argv) > 3 else "uploads"
    gauge = {
        "uploads": "build_cache_proxy_uploads_in_progress",
        "heads": 'build_cache_proxy_connections{listener="gradle"}',
    }[mode]
    work = tempfile.mkdtemp(prefix="stalled-clients-")
    config = os.path.join(work, "config.toml")
    with open(config, "w") as f:
        f.write(CONFIG)
    env = dict(os.environ, BUILD_CACHE_PROXY_DISK_DIR=os.path.join(work, "data"))
    env.pop("RUST_LOG", None)
    daemon = subprocess.Popen(
        [binary, "serve", "--config", config],
        stdout=subprocess.PIPE,
        stderr=open(os.path.join(work, "daemon.log"), "w"),
        env=env,
        text=True,
    )
    try:
        ready = daemon.stdout.readline()
        gradle = re.search(r"gradle=(\S+)", ready).group(1)
        admin = re.search(r"admin=(\S+)", ready).group(1)
        host, port = gradle.rsplit(":", 1)
        metric(admin, gauge)
        time.sleep(1)
        before = (rss_kib(daemon.pid), fds(daemon.pid))

        uploads = []
        for i in range(count):
            source = f"127.0.1.{1 + i // PER_ADDRESS}"
            s = socket.socket()
            s.bind((source, 0))
            s.connect((host, int(port)))
            key = f"{i:032x}"
            if mode == "uploads":
                s.sendall(
                    f"PUT /cache/{key} HTTP/1.1\r\nHost: x\r\nContent-Length: {BODY}\r\n\r\n".encode()
                )
                s.sendall(b"\x5a" * (BODY - 1))
            else:
                head = f"GET /cache/{key} HTTP/1.1\r\nHost: x\r\n".encode()
                while len(head) < HEAD_BYTES:
                    head += b"X-Pad: " + b"p" * 100 + b"\r\n"
                s.sendall(head)
            uploads.append(s)

        # Wait until the daemon holds every connection and has taken in what was sent.
        deadline = time.time() + 120
        while metric(admin, gauge) < count:
            if time.time() > deadline:
                raise RuntimeError(f"the daemon holds {metric(admin, gauge):.0f}, not {count}")
            time.sleep(0.5)
        settled = None
        while settled != rss_kib(daemon.pid):
            settled = rss_kib(daemon.pid)
            time.sleep(2)
        during = (rss_kib(daemon.pid), fds(daemon.pid))

        rss_delta = during[0] - before[0]
        fd_delta = during[1] - before[1]
        print(f"binary: {binary}")
        if mode == "uploads":
            print(f"stalled uploads: {count}, each 1 byte short of {BODY} bytes")
        else:
            print(f"stalled heads: {count}, each {HEAD_BYTES} bytes without its end")
        print(f"RSS: {before[0] // 1024} MiB before, {during[0] // 1024} MiB with them held")
        print(f"descriptors: {before[1]} before, {during[1]} with them held")
        print(f"per connection: {rss_delta / count:.0f} KiB of RSS, {fd_delta / count:.2f} descriptors")
        for s in uploads:
            s.close()
    finally:
        daemon.kill()
        daemon.wait()
        # The killed daemon leaves its temp files behind: N × 1 MiB.
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
