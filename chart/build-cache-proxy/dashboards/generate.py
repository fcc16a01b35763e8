#!/usr/bin/env python3
"""Writes the Grafana dashboard (build-cache-proxy.json) to stdout. Edit this, not the JSON:
scripts/chart-test.sh checks that the JSON is what this prints.

    python3 chart/build-cache-proxy/dashboards/generate.py > chart/build-cache-proxy/dashboards/build-cache-proxy.json
"""
import json
P = "build_cache_proxy_"
N = 'node=~"$node"'
R = "$__rate_interval"
panels = []
pid = [0]
y = [0]

def nid():
    pid[0] += 1
    return pid[0]

def row(title):
    panels.append({"type": "row", "title": title, "id": nid(), "collapsed": False,
                   "gridPos": {"h": 1, "w": 24, "x": 0, "y": y[0]}, "panels": []})
    y[0] += 1

x = [0]
rowh = [0]

def place(w, h):
    if x[0] + w > 24:
        x[0] = 0
        y[0] += rowh[0]
        rowh[0] = 0
    g = {"h": h, "w": w, "x": x[0], "y": y[0]}
    x[0] += w
    rowh[0] = max(rowh[0], h)
    return g

def newrow(title):
    if x[0]:
        y[0] += rowh[0]
    x[0] = 0
    rowh[0] = 0
    row(title)

def target(expr, legend, ref):
    return {"datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": expr,
            "legendFormat": legend, "refId": ref, "range": True}

def panel(kind, title, desc, targets, unit="short", w=8, h=8, extra=None, stack=False, minv=None, maxv=None):
    p = {"type": kind, "title": title, "description": desc, "id": nid(),
         "datasource": {"type": "prometheus", "uid": "${datasource}"},
         "gridPos": place(w, h),
         "targets": [target(e, l, chr(65 + i)) for i, (e, l) in enumerate(targets)],
         "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
         "options": {}}
    d = p["fieldConfig"]["defaults"]
    if minv is not None:
        d["min"] = minv
    if maxv is not None:
        d["max"] = maxv
    if kind == "timeseries":
        d["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10 if not stack else 30,
                       "showPoints": "never", "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
        p["options"] = {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max", "lastNotNull"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}
    if kind == "stat":
        p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "value", "graphMode": "area", "textMode": "auto", "justifyMode": "auto"}
    if extra:
        for k, v in extra.items():
            if k == "defaults":
                d.update(v)
            else:
                p[k] = v
    panels.append(p)

def rate(m, sel="", by=None, rng=R, fn="rate"):
    s = N + ("," + sel if sel else "")
    inner = f'{fn}({P}{m}{{{s}}}[{rng}])'
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"

def gauge(m, sel="", agg="sum", by=None):
    s = N + ("," + sel if sel else "")
    return f"{agg} by ({by}) ({P}{m}{{{s}}})" if by else f"{agg}({P}{m}{{{s}}})"

def ratio(num, den):
    return f"({num}) / ({den})"

pct = {"defaults": {"thresholds": {"mode": "absolute", "steps": [
    {"color": "red", "value": None}, {"color": "orange", "value": 0.5}, {"color": "green", "value": 0.8}]}}}

LOCAL = 'tier=~"memory|disk",result="hit"'
MEM = 'tier="memory"'
NOADMIN = 'front!="admin"'
GET = 'op="get"'
local_hits = lambda by=None, rng=R, fn="rate": rate("lookups_total", LOCAL, by, rng, fn)
gets = lambda by=None, rng=R, fn="rate": rate("lookups_total", MEM, by, rng, fn)

# ---------------------------------------------------------------- overview
newrow("Overview")
panel("stat", "Local hit ratio", "Lookups answered from this node's memory or disk, of all lookups (every read starts at the memory tier). Over the dashboard's time range.",
      [(ratio(local_hits(rng="$__range", fn="increase"), gets(rng="$__range", fn="increase")), "")], "percentunit", w=4, h=5, extra=pct, minv=0, maxv=1)
panel("stat", "Hit ratio with S3", "Lookups answered by memory, disk or the S3 read-through, of all lookups. Over the dashboard's time range.",
      [(ratio(rate("lookups_total", 'result="hit"', rng="$__range", fn="increase"), gets(rng="$__range", fn="increase")), "")], "percentunit", w=4, h=5, extra=pct, minv=0, maxv=1)
panel("stat", "Served from the node", "Response body bytes the cache fronts sent, minus the bytes read from S3 to serve misses: traffic S3 did not have to carry. Over the dashboard's time range.",
      [(f'{rate("sent_bytes_total", NOADMIN, rng="$__range", fn="increase")} - ({rate("s3_received_bytes_total", rng="$__range", fn="increase")} or vector(0))', "")], "bytes", w=4, h=5)
panel("stat", "Build time saved", "The execution time of the tasks whose outputs Gradle took from the cache instead of running them, as each entry's METADATA recorded it when the task ran. Over the dashboard's time range.",
      [(rate("gradle_time_saved_seconds_total", rng="$__range", fn="increase"), "")], "s", w=4, h=5)
panel("stat", "S3 breaker", "Nodes whose S3 circuit breaker is closed (S3 usable) out of the nodes reporting. An open breaker makes misses skip S3 and writes queue.",
      [(f'sum({P}s3_up{{{N}}})', "up"), (f'count({P}s3_up{{{N}}})', "nodes")], "short", w=4, h=5)
panel("stat", "Write-back queue", "Entries waiting for upload to S3, all selected nodes, and the age of the oldest one.",
      [(gauge("upload_queue_entries"), "entries"), (gauge("upload_queue_oldest_age_seconds", agg="max"), "oldest (s)")], "short", w=4, h=5)

# ---------------------------------------------------------------- hit ratio
newrow("Hit ratio")
panel("timeseries", "Hit ratio by front", "GETs answered with the body (200/206) of GETs answered 200, 206 or 404, by front. A Gradle 404 is a miss.",
      [(ratio(rate("requests_total", 'method="GET",status=~"200|206"', "front"), rate("requests_total", 'method="GET",status=~"200|206|404"', "front")), "{{front}}")],
      "percentunit", extra=pct, minv=0, maxv=1)
panel("timeseries", "Hit ratio by tier", "Of the lookups that reach a tier, the share it answers: memory first, then disk, then the S3 read-through.",
      [(ratio(rate("lookups_total", 'result="hit"', "tier"), rate("lookups_total", "", "tier")), "{{tier}}")], "percentunit", minv=0, maxv=1)
panel("timeseries", "Local hit ratio by node", "Memory and disk hits of all lookups, per node. A node far below the others is new, just restarted, or serving different projects.",
      [(ratio(local_hits("node"), gets("node")), "{{node}}")], "percentunit", minv=0, maxv=1)
panel("timeseries", "Lookups by tier and result", "Lookups per second.",
      [(rate("lookups_total", "", "tier, result"), "{{tier}} {{result}}")], "ops", w=12, stack=True)
panel("timeseries", "Requests by front and status", "Requests per second answered by each front.",
      [(rate("requests_total", "", "front, method, status"), "{{front}} {{method}} {{status}}")], "reqps", w=12)

# ---------------------------------------------------------------- Gradle tasks
newrow("Gradle: what hits saved, by task type")
TT = "task_type"
panel("timeseries", "Build time saved by task type", "Seconds of task execution saved per second by Gradle hits, by task type (the task's class; the first gradle.task_type_labels types seen on a node get their own label, later ones are other; unknown: entries without readable METADATA).",
      [(rate("gradle_time_saved_seconds_total", "", TT), "{{task_type}}")], "s", w=12, stack=True)
panel("bargauge", "Time saved by task type", "Build time Gradle hits saved over the dashboard's time range, by task type, largest first.",
      [(f'sort_desc({rate("gradle_time_saved_seconds_total", "", TT, rng="$__range", fn="increase")})', "{{task_type}}")], "s", w=12,
      extra={"options": {"orientation": "horizontal", "displayMode": "gradient", "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}})
panel("timeseries", "Gradle hit ratio by task type", "Hits of hits and misses, by task type. A miss is counted with the type of the PUT that follows it (Gradle stores what it missed and then ran).",
      [(ratio(rate("gradle_hits_total", "", TT), f'{rate("gradle_hits_total", "", TT)} + {rate("gradle_misses_total", "", TT)}'), "{{task_type}}")], "percentunit", w=8, minv=0, maxv=1)
panel("timeseries", "Gradle misses by task type", "Misses per second by the task type their PUT named: the tasks that run again and again.",
      [(rate("gradle_misses_total", "", TT), "{{task_type}}")], "ops", w=8, stack=True)
panel("timeseries", "Gradle entries stored, and unknown ones", "Entries stored per second by task type, and PUTs whose task could not be read, by reason (stored all the same).",
      [(rate("gradle_stores_total", "", TT), "{{task_type}}"), (rate("gradle_unknown_entries_total", "", "reason"), "unknown: {{reason}}")], "ops", w=8)

# ---------------------------------------------------------------- traffic
newrow("Traffic: the node versus S3")
panel("timeseries", "Bytes served locally vs fetched from S3", "Served: response bodies of the cache fronts. From S3: bodies read from S3 to fill misses (each also served). To S3: write-back and write-through uploads.",
      [(f'{rate("sent_bytes_total", NOADMIN)} - ({rate("s3_received_bytes_total")} or vector(0))', "served from the node"),
       (rate("s3_received_bytes_total"), "fetched from S3"),
       (rate("s3_sent_bytes_total"), "uploaded to S3"),
       (rate("received_bytes_total", 'front!="admin"'), "received from clients")], "Bps", w=12)
panel("timeseries", "S3 requests avoided", "Local hits per second: each one is an S3 GET (and its transfer) that did not happen.",
      [(local_hits(), "local hits"), (rate("s3_requests_total", 'op="get"'), "S3 GETs made")], "ops", w=12)

# ---------------------------------------------------------------- latency
newrow("Latency")
panel("timeseries", "Request latency by front", "Time to the end of the response body (so large entries take longer), percentiles per front.",
      [(f'histogram_quantile({q}, {rate("request_duration_seconds_bucket", NOADMIN, "le, front")})', f"p{int(float(q)*100)} {{{{front}}}}") for q in ("0.5", "0.95", "0.99")], "s", w=12)
panel("timeseries", "S3 latency by operation", "Time to S3's response headers, percentiles per operation.",
      [(f'histogram_quantile({q}, {rate("s3_request_duration_seconds_bucket", "", "le, op")})', f"p{int(float(q)*100)} {{{{op}}}}") for q in ("0.5", "0.99")], "s", w=12)

# ---------------------------------------------------------------- disk
newrow("Disk and memory")
panel("timeseries", "Disk use against its bound", "Bytes on the disk tier per node, the configured bound (disk.max_size), and the bytes pinned because S3 does not have them yet.",
      [(gauge("disk_bytes", by="node"), "used {{node}}"), (gauge("disk_max_bytes", by="node"), "bound {{node}}"), (gauge("disk_pinned_bytes", by="node"), "pinned {{node}}")], "bytes", w=12)
panel("bargauge", "Disk fill", "Disk tier bytes over its bound, per node. Near 100% is normal for a warm cache: the least recently used entries are evicted.",
      [(f'max by (node) ({P}disk_bytes{{{N}}} / {P}disk_max_bytes{{{N}}})', "{{node}}")], "percentunit", w=6, minv=0, maxv=1,
      extra={"options": {"orientation": "horizontal", "displayMode": "gradient", "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}})
panel("timeseries", "Evictions", "Entries evicted per second, per node. Constant evictions with a low hit ratio mean disk.max_size is too small for the working set.",
      [(rate("disk_evictions_total", "", "node"), "{{node}}")], "ops", w=6)
panel("timeseries", "Memory tier", "Bytes held by the memory tier, per node.",
      [(gauge("memory_bytes", by="node"), "{{node}}")], "bytes", w=8)
panel("timeseries", "Writes dropped", "Writes answered 2xx but not stored (oversize, disk full, queue full), by front and reason.",
      [(rate("dropped_puts_total", "", "front, reason"), "{{front}} {{reason}}")], "ops", w=8)
panel("timeseries", "Disk entries", "Entries on the disk tier, per node.",
      [(gauge("disk_entries", by="node"), "{{node}}")], "short", w=8)

# ---------------------------------------------------------------- S3
newrow("S3 and the write-back queue")
panel("timeseries", "Write-back queue depth", "Entries waiting for upload to S3, per node. They survive restarts and are never evicted.",
      [(gauge("upload_queue_entries", by="node"), "{{node}}")], "short", w=8)
panel("timeseries", "Write-back queue age", "Age of the oldest entry waiting for upload, per node. Growing age: S3 refuses or is unreachable (see errors).",
      [(gauge("upload_queue_oldest_age_seconds", agg="max", by="node"), "{{node}}")], "s", w=8)
panel("timeseries", "Write-back queue bytes", "Bytes waiting for upload, per node.",
      [(gauge("upload_queue_bytes", by="node"), "{{node}}")], "bytes", w=8)
panel("timeseries", "S3 errors", "S3 requests that failed, timed out or were skipped by the open breaker, and failed upload attempts (each is retried).",
      [(rate("s3_requests_total", 'result=~"error|timeout|skipped"', "op, result"), "{{op}} {{result}}"), (rate("upload_failures_total"), "upload failures")], "ops", w=8)
panel("state-timeline", "S3 breaker state", "Per node: up while the circuit breaker is closed; open while misses skip S3.",
      [(f'min by (node) ({P}s3_up{{{N}}})', "{{node}}")], "short", w=8,
      extra={"defaults": {"mappings": [{"type": "value", "options": {"0": {"text": "open", "color": "red"}, "1": {"text": "up", "color": "green"}}}],
                          "color": {"mode": "thresholds"},
                          "thresholds": {"mode": "absolute", "steps": [{"color": "red", "value": None}, {"color": "green", "value": 1}]}},
             "options": {"showValue": "never", "mergeValues": True, "rowHeight": 0.9}})
panel("timeseries", "S3 requests", "Requests to S3 per second by operation and result, and requests waiting on another request's S3 read of the same key.",
      [(rate("s3_requests_total", "", "op, result"), "{{op}} {{result}}"), (gauge("single_flight_waiters"), "single-flight waiters")], "ops", w=8)

# ---------------------------------------------------------------- dependencies
newrow("Dependencies: the node versus the internet")
panel("timeseries", "Dependency bytes by source", "Bytes of Maven artifacts and downloads served, by where they came from: this node (memory, disk), the bucket (another node fetched them), or the internet (the upstream).",
      [(rate("dependency_served_bytes_total", "", "from"), "{{from}}")], "Bps", w=8, stack=True)
panel("timeseries", "Dependency requests", "Dependency requests per second by repository and result (hit, fetched, revalidated, stale, not_found_cached, checksum_mismatch, upstream_error, ...).",
      [(rate("dependency_requests_total", "", "repository, result"), "{{repository}} {{result}}"),
       (rate("dependency_hits_total", "", "tier"), "hits from {{tier}}")], "ops", w=8)
panel("timeseries", "Upstream requests and checksum failures", "Requests the nodes made to the upstream repositories, by status, and files refused because they did not match the upstream's checksum file.",
      [(rate("dependency_upstream_requests_total", "", "repository, status"), "{{repository}} {{status}}"),
       (rate("dependency_checksum_failures_total", "", "repository"), "checksum mismatch {{repository}}")], "ops", w=8)

# ---------------------------------------------------------------- connections
newrow("Connections and protection")
panel("timeseries", "Open connections", "Connections open per listener, per node.",
      [(gauge("connections", by="node, listener"), "{{node}} {{listener}}")], "short", w=8)
panel("timeseries", "Connections refused", "Connections closed at accept because a limit was reached, by listener and reason.",
      [(rate("connections_refused_total", "", "listener, reason"), "{{listener}} {{reason}}"), (rate("accept_errors_total", "", "listener"), "accept errors {{listener}}")], "ops", w=8)
panel("timeseries", "Timeouts and failures", "Requests cut off by a timeout (by front and phase), TLS handshakes that failed, and credentials refused.",
      [(rate("request_timeouts_total", "", "front, phase"), "timeout {{front}} {{phase}}"),
       (rate("tls_handshake_failures_total", "", "listener"), "TLS handshake {{listener}}"),
       (rate("auth_failures_total", "", "front, reason"), "auth {{front}} {{reason}}")], "ops", w=8)

dash = {
    "title": "build-cache-proxy",
    "uid": "build-cache-proxy",
    "description": "Node-local build cache: hit ratios, traffic kept off S3, latency, disk, write-back queue and S3 health, per node.",
    "tags": ["build-cache-proxy", "ci", "gradle"],
    "timezone": "browser",
    "editable": True,
    "graphTooltip": 1,
    "schemaVersion": 39,
    "version": 1,
    "refresh": "30s",
    "time": {"from": "now-6h", "to": "now"},
    "templating": {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus", "current": {}, "hide": 0},
        {"name": "node", "label": "Node", "type": "query",
         "datasource": {"type": "prometheus", "uid": "${datasource}"},
         "definition": f"label_values({P}build_info, node)",
         "query": {"query": f"label_values({P}build_info, node)", "refId": "node"},
         "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*", "sort": 1,
         "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "hide": 0},
    ]},
    "annotations": {"list": []},
    "links": [],
    "panels": panels,
}
print(json.dumps(dash, indent=2))
