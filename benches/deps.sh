#!/usr/bin/env bash
# Dependency resolution with real Gradle: straight from a slow upstream, cold through the node,
# warm from the node.
#
#   benches/deps.sh [repeats] [latency ms]        (defaults: 3 repeats, 30 ms)
#
# Generates a Maven dependency graph (40 modules, four levels of transitive dependencies, three
# leaves in two versions so that Gradle settles a conflict, jars of 10 KiB-2 MiB of random bytes,
# every .pom and .jar with its .sha1) in two repositories: "libs" (a company's, 8 modules) and
# "central" (the rest). A python3 server serves both (GET, HEAD, 404), waiting `latency` before
# each answer, and logs every request. The build declares libs first, so Gradle probes libs for
# every central module and gets 404s first, as builds do against their first repository.
# Each case runs Debian's Gradle 4.4.1 (`gradle --no-daemon`) with a fresh GRADLE_USER_HOME, so
# Gradle downloads every file:
#
#   direct  the build's repositories are the upstream's, no init script
#   cold    a fresh daemon (local tiers only, no [s3]) proxying both repositories, reached
#           through the chart's init script (BUILD_CACHE_PROXY_URL)
#   warm    that cold run's daemon again, a fresh GRADLE_USER_HOME: the node holds every file
#           and every 404
#   floor   that round's direct GRADLE_USER_HOME again: no download at all, what a Gradle run
#           costs here without any network (JVM start, configuration)
#
# Each round runs the four in turn, seconds apart (the machine's load moves), the warm and floor
# runs right after that round's cold one. Prints a markdown table of the medians, direct ÷ case
# (the median of the rounds' ratios) and the upstream requests each case made (median per run),
# then the first run's upstream requests by kind. not_found_ttl is set to 10m, as in the tests,
# so that a slow warm run is still served the remembered 404s.
# Needs gradle (apt-get install gradle), python3; builds --release.
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-3}
latency_ms=${2:-30}
root=$PWD
init_script=$root/chart/build-cache-proxy/files/build-cache-proxy.init.gradle
work=$(mktemp -d /tmp/bcp-deps.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

for tool in gradle python3 curl; do
  command -v "$tool" >/dev/null || { echo "deps.sh needs $tool (apt-get install gradle python3 curl)" >&2; exit 2; }
done
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-target}/release/build-cache-proxy

# The repositories: poms, jars and .sha1 files, from a fixed seed (the same graph every run).
# Writes expected.txt: "<jar name> <size>" of every jar the resolution must end with.
python3 - "$work/repo" "$work/expected.txt" <<'PY'
import hashlib, math, os, random, sys

repo, expected_path = sys.argv[1:]
rng = random.Random(18)
levels = [14, 11, 8, 5, 2]  # leaves first; 40 modules
groups = ["org.alpha", "org.beta.core", "io.gamma", "com.delta.util", "net.epsilon"]
modules = []  # [group, artifact, level, repo]
for level, count in enumerate(levels):
    for i in range(count):
        modules.append([rng.choice(groups), f"lib{level}{i:02d}", level, "central"])
# The company's own modules sit on top: the two roots, the level below, one more.
company = [m for m in modules if m[2] >= 3] + [m for m in modules if m[2] == 2][:1]
for m in company:
    m[0], m[3] = "com.acme", "libs"
# Three leaves published in 1.0 and 1.1; the others in 1.0 only.
versions = {id(m): ["1.0"] for m in modules}
for m in [m for m in modules if m[2] == 0][:3]:
    versions[id(m)] = ["1.0", "1.1"]

def coordinates(m, version):
    return (m[0], m[1], version)

deps = {}  # (g, a) -> [(g, a, v)], the same for every version of a module
for m in modules:
    level = m[2]
    chosen = []
    if level > 0:
        below = [x for x in modules if x[2] == level - 1]
        lower = [x for x in modules if x[2] < level]
        picks = rng.sample(below, rng.randint(1, min(3, len(below))))
        picks += rng.sample(lower, rng.randint(0, 2))
        for p in dict((id(p), p) for p in picks).values():
            chosen.append(coordinates(p, rng.choice(versions[id(p)])))
    deps[(m[0], m[1])] = chosen

def jar_size():
    # Log-uniform between 10 KiB and 2 MiB: many small jars, a few large ones.
    return int(math.exp(rng.uniform(math.log(10 * 1024), math.log(2 * 1024 * 1024))))

def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    with open(path + ".sha1", "w") as f:
        f.write(hashlib.sha1(data).hexdigest())

def pom(g, a, v, dependencies):
    lines = "".join(
        f"    <dependency><groupId>{dg}</groupId><artifactId>{da}</artifactId><version>{dv}</version></dependency>\n"
        for dg, da, dv in dependencies)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<project xmlns="http://maven.apache.org/POM/4.0.0">\n'
            f"  <modelVersion>4.0.0</modelVersion>\n  <groupId>{g}</groupId>\n  <artifactId>{a}</artifactId>\n"
            f"  <version>{v}</version>\n  <packaging>jar</packaging>\n  <dependencies>\n{lines}  </dependencies>\n"
            f"</project>\n").encode()

sizes = {}
for m in modules:
    g, a, _, where = m
    for v in versions[id(m)]:
        base = f"{repo}/{where}/{g.replace('.', '/')}/{a}/{v}/{a}-{v}"
        size = jar_size()
        sizes[(g, a, v)] = size
        write(base + ".pom", pom(g, a, v, deps[(g, a)]))
        write(base + ".jar", rng.randbytes(size))

# The build depends on the modules nothing else depends on; Gradle takes the highest version
# asked for of each module.
depended = {(g, a) for ds in deps.values() for g, a, _ in ds}
roots = [coordinates(m, versions[id(m)][-1]) for m in modules if (m[0], m[1]) not in depended]
asked = {}
for g, a, v in roots + [d for ds in deps.values() for d in ds]:
    asked[(g, a)] = max(asked.get((g, a), v), v)
with open(f"{repo}/roots.txt", "w") as f:
    f.writelines(f"{g}:{a}:{v}\n" for g, a, v in roots)
with open(expected_path, "w") as f:
    f.writelines(f"{a}-{v}.jar {sizes[(g, a, v)]}\n" for (g, a), v in sorted(asked.items(), key=lambda x: x[0][1]))
files = sum(len(fs) for _, _, fs in os.walk(repo)) - 1
total = sum(sizes.values())
print(f"graph: {len(modules)} modules ({len(company)} in libs), {len(roots)} roots, {files} files, "
      f"{len(asked)} jars to resolve ({sum(sizes[(g, a, v)] for (g, a), v in asked.items()) / 2**20:.1f} MiB), "
      f"{total / 2**20:.1f} MiB of jars published", file=sys.stderr)
PY

# The upstream: files from the directory, each answer `latency` late; one log line per request.
cat > "$work/upstream.py" <<'PY'
import http.server, sys, threading, time

directory, port_file, log_path, latency = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]) / 1000
log = open(log_path, "a", buffering=1)
lock = threading.Lock()

class Slow(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real repository
    # As repository servers and CDNs do. Without it the head and the body of an answer leave in
    # two writes, Nagle holds the second until the first is acknowledged, and a client on a
    # kept-alive connection (the node's pool; Gradle opens new ones) acknowledges 40 ms late:
    # every fetch through the node paid 40 ms that a real upstream does not charge.
    disable_nagle_algorithm = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=directory, **kwargs)

    def do_GET(self):
        time.sleep(latency)
        super().do_GET()

    def do_HEAD(self):
        time.sleep(latency)
        super().do_HEAD()

    def log_request(self, code="-", size="-"):
        with lock:
            log.write(f"{self.command} {self.path} {int(code)}\n")

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
server.daemon_threads = True
with open(port_file, "w") as f:
    f.write(str(server.server_address[1]))
server.serve_forever()
PY
: > "$work/upstream.log"
python3 "$work/upstream.py" "$work/repo" "$work/upstream.port" "$work/upstream.log" "$latency_ms" &
pids+=($!)
for _ in $(seq 1 50); do [ -s "$work/upstream.port" ] && break; sleep 0.1; done
upstream=http://127.0.0.1:$(cat "$work/upstream.port")
curl -sf -o /dev/null "$upstream/central/" || { echo "the upstream did not start" >&2; exit 1; }

# The build: the two repositories, the roots, and a task that lists what it resolved.
mkdir -p "$work/project"
echo "rootProject.name = 'deps-bench'" > "$work/project/settings.gradle"
{
  echo "repositories {"
  echo "  maven { url '$upstream/libs/' }"
  echo "  maven { url '$upstream/central/' }"
  echo "}"
  echo "configurations { libs }"
  echo "dependencies {"
  sed "s/.*/  libs '&'/" "$work/repo/roots.txt"
  echo "}"
  echo "task resolve { doLast { configurations.libs.files.each { println \"RESOLVED \${it.name} \${it.length()}\" } } }"
} > "$work/project/build.gradle"
rm "$work/repo/roots.txt"

# One daemon: local tiers only, both repositories; sets daemon_pid and node (its Gradle URL).
daemon_pid=
node=
start_daemon() { # dir
  local dir=$1
  mkdir -p "$dir"
  cat > "$dir/daemon.toml" <<CONF
[listen]
gradle = "127.0.0.1:0"
admin = "127.0.0.1:0"
[disk]
dir = "$dir/data"
max_size = "2GiB"
[maven]
not_found_ttl = "10m"
[[maven.repositories]]
name = "libs"
url = "$upstream/libs/"
[[maven.repositories]]
name = "central"
url = "$upstream/central/"
[log]
level = "warn"
CONF
  "$bin" serve --config "$dir/daemon.toml" > "$dir/daemon.out" 2> "$dir/daemon.err" &
  daemon_pid=$!
  pids+=("$daemon_pid")
  for _ in $(seq 1 100); do grep -q ready "$dir/daemon.out" 2>/dev/null && break; sleep 0.1; done
  local addr
  addr=$(sed -n 's/.*gradle=\([^ ]*\).*/\1/p' "$dir/daemon.out")
  [ -n "$addr" ] || { echo "the daemon did not start:" >&2; cat "$dir/daemon.err" >&2; exit 1; }
  node=http://$addr
}

# One Gradle run; appends "<case> <seconds> <upstream requests> <upstream 404s>" to results.
# Fails (with Gradle's output) unless the resolution ends with exactly the expected jars.
run=0
gradle_run() { # case gradle-home [node URL]
  local label=$1 home=$2 node=${3:-} out before started ended
  local args=(--no-daemon --console=plain -g "$home")
  run=$((run + 1))
  out=$work/gradle-$run-$label.log
  [ -n "$node" ] && args+=(--init-script "$init_script")
  before=$(wc -l < "$work/upstream.log")
  started=$(date +%s.%N)
  if ! (cd "$work/project" && BUILD_CACHE_PROXY_URL=$node gradle "${args[@]}" resolve > "$out" 2>&1); then
    echo "gradle ($label) failed:" >&2; tail -40 "$out" >&2; exit 1
  fi
  ended=$(date +%s.%N)
  sed -n 's/^RESOLVED //p' "$out" | sort > "$work/resolved.txt"
  if ! sort "$work/expected.txt" | cmp -s - "$work/resolved.txt"; then
    echo "gradle ($label) resolved something else:" >&2
    sort "$work/expected.txt" | diff - "$work/resolved.txt" >&2 || true
    tail -20 "$out" >&2; exit 1
  fi
  tail -n +"$((before + 1))" "$work/upstream.log" > "$work/requests-$run-$label.log"
  [ -e "$work/first-$label.log" ] || cp "$work/requests-$run-$label.log" "$work/first-$label.log"
  awk -v l="$label" -v s="$started" -v e="$ended" '{n++} $3 == 404 {nf++}
    END {printf "%s %.2f %d %d\n", l, e - s, n, nf}' "$work/requests-$run-$label.log" >> "$work/results"
  tail -n 1 "$work/results" >&2
}

: > "$work/results"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq 1 "$repeats"); do
  # The four cases seconds apart, so that a change in the machine's load hits them alike.
  gradle_run direct "$work/home-direct-$round"
  [ -n "$daemon_pid" ] && { kill "$daemon_pid"; wait "$daemon_pid" 2>/dev/null || true; }
  start_daemon "$work/node-$round"
  gradle_run cold "$work/home-cold-$round" "$node"
  gradle_run warm "$work/home-warm-$round" "$node"
  gradle_run floor "$work/home-direct-$round"
  rm -rf "$work/home-direct-$round" "$work/home-cold-$round" "$work/home-warm-$round"
done

median() { sort -n | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
stat() { awk -v c="$1" -v k="$2" '$1 == c {print $k}' "$work/results" | median; }
floor=$(stat floor 2)
# direct ÷ case: the median of each round's ratio (its runs seconds apart).
ratio() { # case
  awk -v c="$1" '$1 == "direct" {d[++nd] = $2} $1 == c {t[++nt] = $2} END {for (i = 1; i <= nt; i++) print d[i] / t[i]}' \
    "$work/results" | median
}
echo
echo "Gradle $(gradle --version 2>/dev/null | sed -n 's/^Gradle //p'), $(nproc) cores (load average $load_start at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end), $latency_ms ms per upstream answer, $repeats rounds, medians:"
echo
echo "| case | wall s | runs (s) | above floor s | direct ÷ case | upstream requests (404s) |"
echo "|---|---:|---|---:|---:|---:|"
for label in direct cold warm floor; do
  t=$(stat "$label" 2)
  runs=$(awk -v c="$label" '$1 == c {printf "%s%s", sep, $2; sep=" / "}' "$work/results")
  awk -v l="$label" -v t="$t" -v r="$(ratio "$label")" -v f="$floor" -v runs="$runs" \
    -v n="$(stat "$label" 3)" -v nf="$(stat "$label" 4)" 'BEGIN {
    name["direct"] = "direct from the upstream"
    name["cold"] = "cold through the node"
    name["warm"] = "warm from the node"
    name["floor"] = "floor (Gradle cache full, no download)"
    if (l == "floor") printf "| %s | %.2f | %s | – | – | %d (%d) |\n", name[l], t, runs, n, nf
    else printf "| %s | %.2f | %s | %.2f | %.2f | %d (%d) |\n", name[l], t, runs, t - f, r, n, nf }'
done
echo
echo "Upstream requests of each case's first run, by kind:"
echo
for label in direct cold warm; do
  kinds=$(awk '{file = $2; sub(/.*\//, "", file); if (match(file, /\.[a-z]/)) file = substr(file, RSTART)
      print $1 " " file " " $3}' "$work/first-$label.log" | sort | uniq -c | awk '{print $2 " " $3 " " $4 ": " $1}' |
    paste -sd, - | sed 's/,/, /g')
  echo "- $label: ${kinds:-none}"
done
