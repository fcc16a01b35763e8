"""Checks every fenced block of docs/deploy-eks.md with the tool it is written for.

Run by scripts/guide-check.sh, which installs the tools and passes their paths:

    guide_check.py GUIDE REPO WORK HELM DAEMON_BIN KUBE_VERSION

A block is checked by the kind named in the HTML comment on the line before it:

    <!-- guide-check: KIND [NAME] [extends=BASE] -->

A fenced block without such a comment is an error, and so is an unknown kind. The blocks refer
to each other (the runner's values are compared with the chart's, the IAM policies with the
buckets the chart and the runner name), so the values used across the guide must agree.
"""
import json
import os
import re
import subprocess
import sys
import tomllib

import yaml

GUIDE, REPO, WORK, HELM, DAEMON, KUBE_VERSION = sys.argv[1:7]
CHART = os.path.join(REPO, "chart", "build-cache-proxy")
RELEASE, NAMESPACE = "bcp", "build-cache"

failures = []


def say(message):
    print(f"guide-check: {message}", file=sys.stderr)


def fail(where, message):
    failures.append(f"{where}: {message}")
    say(f"FAIL: {where}: {message}")


def run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, **kwargs)


# ---- the blocks ----------------------------------------------------------------------------------
MARKER = re.compile(r"^<!--\s*guide-check:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^```(\S*)\s*$")


class Block:
    def __init__(self, line, kind, args, lang, text):
        self.line, self.kind, self.lang, self.text = line, kind, lang, text
        self.words = [a for a in args if "=" not in a]
        self.name = self.words[0] if self.words else ""
        self.options = dict(a.split("=", 1) for a in args if "=" in a)

    @property
    def where(self):
        label = " ".join([self.kind] + self.words)
        return f"docs/deploy-eks.md:{self.line} ({label})"


def read_blocks(path):
    lines = open(path).read().split("\n")
    blocks, i = [], 0
    while i < len(lines):
        m = MARKER.match(lines[i])
        if m and not (i + 1 < len(lines) and FENCE.match(lines[i + 1])):
            fail(f"docs/deploy-eks.md:{i + 1}", "a guide-check comment not directly before a fenced block")
        f = FENCE.match(lines[i])
        if not f:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        if end is None:
            fail(f"docs/deploy-eks.md:{i + 1}", "a fenced block that never closes")
            break
        marker = MARKER.match(lines[i - 1]) if i > 0 else None
        if marker is None:
            fail(f"docs/deploy-eks.md:{i + 1}", "a fenced block without a guide-check comment on the line before it")
        else:
            words = marker.group(1).split()
            text = "\n".join(lines[i + 1:end]) + "\n"
            blocks.append(Block(i + 1, words[0] if words else "", words[1:], f.group(1), text))
        i = end + 1
    return blocks


blocks = read_blocks(GUIDE)


def the(kind, name=""):
    found = [b for b in blocks if b.kind == kind and b.name == name]
    if len(found) != 1:
        label = f"{kind} {name}".strip()
        fail("docs/deploy-eks.md", f"expected one '{label}' block, found {len(found)}")
        return None
    return found[0]


# ---- facts from the source the guide must agree with -------------------------------------------
# The S3 operations the daemon's S3 tier calls, and the IAM action each needs.
IAM_ACTION = {
    "get_object": "s3:GetObject",
    "head_object": "s3:GetObject",
    "put_object": "s3:PutObject",
    "create_multipart_upload": "s3:PutObject",
    "upload_part": "s3:PutObject",
    "complete_multipart_upload": "s3:PutObject",
    "abort_multipart_upload": "s3:AbortMultipartUpload",
    "delete_object": "s3:DeleteObject",
    "list_objects_v2": "s3:ListBucket",
}
calls = set()
for root, _, files in os.walk(os.path.join(REPO, "src", "store", "s3")):
    for name in files:
        if name.endswith(".rs"):
            calls |= set(re.findall(r"client\s*\.(\w+)\(\)", open(os.path.join(root, name)).read()))
for call in sorted(calls - IAM_ACTION.keys()):
    fail("src/store/s3", f"the daemon calls S3's {call}, which guide_check.py does not map to an IAM action")
DAEMON_ACTIONS = {IAM_ACTION[c] for c in calls if c in IAM_ACTION}
say(f"the daemon's S3 calls: {', '.join(sorted(calls))} -> {', '.join(sorted(DAEMON_ACTIONS))}")

# GitLab Runner's config.toml names (its Go structs' toml tags) for the sections the guide writes.
RUNNER_KEYS = {
    "runners": {"name", "url", "token", "executor", "limit", "environment", "output_limit",
                "request_concurrency", "kubernetes", "cache", "shell", "pre_get_sources_script",
                "builds_dir", "cache_dir", "feature_flags"},
    "runners.cache": {"Type", "Path", "Shared", "MaxUploadedArchiveSize", "s3", "gcs", "azure"},
    "runners.cache.s3": {"ServerAddress", "AccessKey", "SecretKey", "SessionToken", "BucketName",
                         "BucketLocation", "Insecure", "AuthenticationType", "ServerSideEncryption",
                         "ServerSideEncryptionKeyID", "DualStack", "PathStyle", "Accelerate",
                         "RoleARN", "UploadRoleARN"},
    "runners.kubernetes": {"host", "namespace", "namespace_overwrite_allowed", "privileged", "image",
                           "image_pull_secrets", "service_account", "service_account_overwrite_allowed",
                           "node_selector", "node_tolerations", "host_aliases", "cpu_request",
                           "cpu_limit", "memory_request", "memory_limit", "helper_image",
                           "helper_cpu_request", "helper_memory_request", "pod_labels",
                           "pod_annotations", "poll_timeout", "volumes", "affinity"},
    "runners.kubernetes.host_aliases": {"ip", "hostnames"},
}
AUTH_TYPES = {"iam", "access-key"}


def check_runner_keys(where, table, section):
    allowed = RUNNER_KEYS.get(section)
    if allowed is None:
        return
    for key, value in table.items():
        if key not in allowed:
            fail(where, f"[{section}] {key} is not a key GitLab Runner knows")
            continue
        sub = f"{section}.{key}"
        if isinstance(value, dict):
            check_runner_keys(where, value, sub)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                check_runner_keys(where, item, sub)


# ---- checkers ------------------------------------------------------------------------------------
os.makedirs(WORK, exist_ok=True)
values_files, renders, configs = {}, {}, {}


def helm_template(name, files):
    args = [HELM, "template", RELEASE, CHART, "--namespace", NAMESPACE]
    for f in files:
        args += ["-f", f]
    out = run(args)
    if out.returncode != 0:
        return None, out.stderr
    return out.stdout, None


def merged_values(name):
    merged = {}
    for f in values_files[name]:
        merged = deep_merge(merged, yaml.safe_load(open(f)) or {})
    return deep_merge(yaml.safe_load(open(os.path.join(CHART, "values.yaml"))), merged)


def deep_merge(a, b):
    out = dict(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def node_address(v):
    """Where build pods reach the S3 listener on their node: (address, port), from
    s3Api.nodeLocalAddress (the chart makes the address) or s3Api.hostPort (the node has it)."""
    api = v["s3Api"]
    if api.get("nodeLocalAddress"):
        return api["nodeLocalAddress"], api["nodeLocalPort"]
    return api["hostPort"]["hostIP"], api["hostPort"]["port"]


def check_chart_values(b):
    path = os.path.join(WORK, f"values-{b.name}.yaml")
    open(path, "w").write(b.text)
    base = b.options.get("extends")
    files = (values_files.get(base, []) if base else []) + [path]
    if base and base not in values_files:
        fail(b.where, f"extends {base}, which is not an earlier chart-values block")
        return
    rendered, err = helm_template(b.name, files)
    if rendered is None:
        fail(b.where, f"helm template refuses these values: {err.strip()}")
        return
    values_files[b.name] = files
    manifests = os.path.join(WORK, f"rendered-{b.name}.yaml")
    open(manifests, "w").write(rendered)
    out = run(["kubernetes-validate", "-k", KUBE_VERSION, "--strict", manifests])
    text = out.stdout + out.stderr
    unknown = [l for l in text.splitlines() if "Couldn't find schema" in l
               and not re.search(r"kind (ServiceMonitor|PodMonitor|Certificate) ", l)]
    if out.returncode != 0 or unknown:
        fail(b.where, f"kubernetes-validate for Kubernetes {KUBE_VERSION}:\n{text}")
        return
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    renders[b.name] = docs
    configs[b.name] = next(d["data"]["build-cache-proxy.toml"] for d in docs if d["kind"] == "ConfigMap"
                           and "build-cache-proxy.toml" in d.get("data", {}))
    v = merged_values(b.name)
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    ports = {p["name"]: p for p in ds["spec"]["template"]["spec"]["containers"][0]["ports"]}
    hp = v["s3Api"]["hostPort"]
    if v["s3Api"]["enabled"] and v["s3Api"].get("nodeLocalAddress"):
        address, port = node_address(v)
        listen = tomllib.loads(configs[b.name])["listen"]["s3"]
        if ds["spec"]["template"]["spec"].get("hostNetwork") is not True or listen != f"{address}:{port}":
            fail(b.where, f"the daemon must run on the host network with listen.s3 on {address}:{port} (is {listen})")
    elif v["s3Api"]["enabled"] and hp["enabled"]:
        s3 = ports.get("s3", {})
        if s3.get("hostPort") != hp["port"] or s3.get("hostIP", "") != hp["hostIP"]:
            fail(b.where, f"the DaemonSet does not publish the S3 port on {hp['hostIP']}:{hp['port']}: {s3}")
    check_daemon_config(b.where, b.name, configs[b.name])
    say(f"ok: {b.where}: helm template renders {len(docs)} manifests, valid for Kubernetes {KUBE_VERSION}; "
        "check-config accepts the rendered config")


def check_daemon_config(where, name, text):
    """The daemon's own check, with the pod's file paths moved under WORK."""
    root = os.path.join(WORK, f"pod-{name}")
    os.makedirs(root, exist_ok=True)
    rewritten = text.replace('"/var/cache/build-cache-proxy"', f'"{root}/cache"')
    for path in sorted(set(re.findall(r'_file = "(/etc/build-cache-proxy/[^"]+)"', text))):
        local = root + path
        os.makedirs(os.path.dirname(local), exist_ok=True)
        rewritten = rewritten.replace(f'"{path}"', f'"{local}"')
        if not os.path.exists(local):
            open(local, "w").write("not-a-real-secret\n")
    cert = re.search(r'cert_file = "([^"]+)"', rewritten)
    key = re.search(r'key_file = "([^"]+)"', rewritten)
    if cert and key:
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-days", "2", "-subj", "/CN=bcp", "-keyout", key.group(1), "-out", cert.group(1)])
    path = os.path.join(WORK, f"config-{name}.toml")
    open(path, "w").write(rewritten)
    out = run([DAEMON, "check-config", path])
    if out.returncode != 0:
        fail(where, f"build-cache-proxy check-config refuses the config:\n{rewritten}\n{out.stdout}{out.stderr}")


def check_daemon_config_block(b):
    try:
        shown = tomllib.loads(b.text)
    except tomllib.TOMLDecodeError as e:
        fail(b.where, f"not TOML: {e}")
        return
    if b.name not in configs:
        fail(b.where, f"no chart-values {b.name} block rendered before it")
        return
    rendered = tomllib.loads(configs[b.name])
    if shown != rendered:
        diff = [f"  [{s}] {k}: guide {shown.get(s, {}).get(k)!r}, chart {rendered.get(s, {}).get(k)!r}"
                if isinstance(rendered.get(s, shown.get(s)), dict) else f"  {s}"
                for s in sorted(set(shown) | set(rendered))
                for k in (sorted(set(shown.get(s, {})) | set(rendered.get(s, {})))
                          if isinstance(rendered.get(s, shown.get(s)), dict) else [None])
                if not isinstance(rendered.get(s, shown.get(s)), dict)
                or shown.get(s, {}).get(k) != rendered.get(s, {}).get(k)]
        fail(b.where, "differs from the config the chart renders from the values:\n" + "\n".join(diff))
        return
    check_daemon_config(b.where, b.name + "-shown", b.text)
    say(f"ok: {b.where}: the config the chart renders, and check-config accepts it")


def json_block(b):
    try:
        return json.loads(b.text)
    except json.JSONDecodeError as e:
        fail(b.where, f"not JSON: {e}")
        return None


S3_ARN = re.compile(r"^arn:aws:s3:::([a-z0-9.-]+)(/.*)?$")


def policy_grants(b, doc):
    """{bucket: (object actions and their key patterns, bucket actions)} of an Allow-only policy."""
    if doc.get("Version") != "2012-10-17":
        fail(b.where, 'Version must be "2012-10-17"')
    grants = {}
    for st in doc.get("Statement", []):
        if st.get("Effect") != "Allow":
            fail(b.where, "only Allow statements are expected")
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        for r in resources:
            m = S3_ARN.match(r)
            if not m:
                fail(b.where, f"{r} is not an S3 bucket or object ARN")
                continue
            g = grants.setdefault(m.group(1), {"object": {}, "bucket": set()})
            for a in actions:
                if m.group(2):
                    g["object"].setdefault(a, set()).add(m.group(2)[1:])
                else:
                    g["bucket"].add(a)
    return grants


def check_iam_policy(b):
    doc = json_block(b)
    if doc is None:
        return
    grants = policy_grants(b, doc)
    if b.name == "daemon":
        # "iam-policy daemon access-key" is checked against chart-values access-key.
        values_name = b.words[1] if len(b.words) > 1 else "base"
        if values_name not in values_files:
            fail(b.where, f"no chart-values {values_name} block before it")
            return
        v = merged_values(values_name)
        gradle_bucket = v["config"]["s3"]["bucket"]
        front = {bk.get("backend_bucket") or gradle_bucket for bk in v["s3Api"]["buckets"]} \
            if v["s3Api"]["enabled"] else set()
        need = {gradle_bucket: DAEMON_ACTIONS - {"s3:DeleteObject"}}
        for bucket in front:
            need[bucket] = set(DAEMON_ACTIONS)
        for bucket, g in grants.items():
            if bucket not in need:
                fail(b.where, f"grants on {bucket}, which the chart values ({values_name}) give the daemon no use for")
            granted = set(g["object"]) | g["bucket"]
            for a in sorted(granted - DAEMON_ACTIONS):
                fail(b.where, f"{a} on {bucket}: the daemon makes no S3 call that needs it")
            for a in sorted(set(g["object"]) & {"s3:ListBucket"}) + sorted(g["bucket"] - {"s3:ListBucket"}):
                fail(b.where, f"{a} on {bucket} is granted on the wrong kind of resource")
            for a, patterns in g["object"].items():
                prefix = v["config"]["s3"].get("prefix") or ""
                if bucket == gradle_bucket and not any(p == "*" or f"{prefix}gradle/".startswith(p.rstrip("*"))
                                                       for p in patterns):
                    fail(b.where, f"{a} on {bucket} does not cover {prefix}gradle/, where the daemon keeps Gradle entries")
        for bucket, actions in need.items():
            g = grants.get(bucket, {"object": {}, "bucket": set()})
            granted = set(g["object"]) | g["bucket"]
            for a in sorted(actions - granted):
                fail(b.where, f"{a} on {bucket} is missing: the daemon's S3 calls need it")
        say(f"ok: {b.where}: exactly the actions the daemon's S3 calls need, on the buckets of chart-values {values_name}")
    elif b.name == "runner":
        cache = runner_cache()
        if cache is None:
            return
        bucket, path = cache["s3"]["BucketName"], cache.get("Path", "")
        check_client_policy(b, grants, bucket, f"{path}/" if path else "",
                            {"s3:GetObject", "s3:PutObject"}, "the runner's cache")
    elif b.name == "build":
        gradle = the("build-gradle")
        bucket = re.search(r"bucket\s*=\s*'([^']+)'", gradle.text).group(1) if gradle else ""
        key = re.search(r'key\s*=\s*"([^/"]+/)', gradle.text) if gradle else None
        check_client_policy(b, grants, bucket, key.group(1) if key else "",
                            {"s3:GetObject", "s3:PutObject"}, "s3Upload")
    else:
        fail(b.where, "unknown policy name (daemon, runner, build)")


def check_client_policy(b, grants, bucket, key_prefix, object_actions, who):
    g = grants.get(bucket)
    if g is None:
        fail(b.where, f"nothing granted on {bucket}, the bucket {who} uses")
        return
    for a in sorted(object_actions - set(g["object"])):
        fail(b.where, f"{a} on {bucket} is missing for {who}")
    for a, patterns in g["object"].items():
        if not any(p == "*" or key_prefix.startswith(p.rstrip("*")) or p.rstrip("*") == key_prefix
                   for p in patterns):
            fail(b.where, f"{a} on {bucket} does not cover {key_prefix}*, where {who} writes")
    if "s3:ListBucket" not in g["bucket"]:
        fail(b.where, f"s3:ListBucket on {bucket} is missing: without it a missing key is 403, not 404")
    extra = (set(g["object"]) | g["bucket"]) - object_actions - {"s3:ListBucket"}
    if extra:
        fail(b.where, f"{', '.join(sorted(extra))}: more than {who} needs")
    if set(grants) - {bucket}:
        fail(b.where, f"grants on {', '.join(sorted(set(grants) - {bucket}))}, which {who} does not use")
    say(f"ok: {b.where}: {who} on {bucket} ({key_prefix}*), with ListBucket")


def check_iam_trust(b):
    doc = json_block(b)
    if doc is None:
        return
    if b.name == "daemon":
        docs = renders.get("base")
        if not docs:
            fail(b.where, "no chart-values base render")
            return
        sa = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]
        subject = f"system:serviceaccount:{sa['namespace']}:{sa['name']}"
    elif b.name == "runner":
        # The gitlab-runner chart names its ServiceAccount after the release ("gitlab-runner").
        subject = "system:serviceaccount:gitlab-runner:gitlab-runner"
    elif b.name == "build":
        k = runner_kubernetes()
        if k is None:
            return
        subject = f"system:serviceaccount:{k['namespace']}:{k['service_account']}"
    else:
        fail(b.where, "unknown trust policy name (daemon, runner, build)")
        return
    for st in doc.get("Statement", []):
        if st.get("Action") != "sts:AssumeRoleWithWebIdentity":
            fail(b.where, "the action must be sts:AssumeRoleWithWebIdentity (IRSA)")
        fed = st.get("Principal", {}).get("Federated", "")
        m = re.match(r"^arn:aws:iam::\d{12}:oidc-provider/(.+)$", fed)
        if not m:
            fail(b.where, f"{fed} is not an OIDC provider ARN")
            continue
        cond = st.get("Condition", {}).get("StringEquals", {})
        if cond.get(f"{m.group(1)}:sub") != subject:
            fail(b.where, f"sub is {cond.get(m.group(1) + ':sub')!r}, the ServiceAccount is {subject}")
        if cond.get(f"{m.group(1)}:aud") != "sts.amazonaws.com":
            fail(b.where, "aud must be sts.amazonaws.com")
    say(f"ok: {b.where}: trusts {subject}")


runner_doc = None


def runner_config():
    global runner_doc
    if runner_doc is None:
        b = the("runner-values")
        if b is None:
            return None
        try:
            values = yaml.safe_load(b.text)
            runner_doc = tomllib.loads(values["runners"]["config"])
        except (yaml.YAMLError, tomllib.TOMLDecodeError, KeyError, TypeError) as e:
            fail(b.where, f"runners.config is not TOML in YAML: {e}")
            return None
    return runner_doc


def runner_kubernetes():
    doc = runner_config()
    return doc["runners"][0].get("kubernetes") if doc else None


def runner_cache():
    doc = runner_config()
    return doc["runners"][0].get("cache") if doc else None


def check_runner_values(b):
    doc = runner_config()
    if doc is None:
        return
    for runner in doc.get("runners", []):
        check_runner_keys(b.where, runner, "runners")
    k, cache = runner_kubernetes(), runner_cache()
    s3 = cache.get("s3", {})
    v = merged_values("base") if "base" in values_files else None
    if v is None:
        fail(b.where, "no chart-values base block before it")
        return
    forward = v["s3Api"]["forward"]
    hosts = {h for f in forward for h in f["hosts"]}
    address, port = node_address(v)
    if cache.get("Type") != "s3":
        fail(b.where, 'Type must be "s3"')
    if cache.get("Shared") is not True:
        fail(b.where, "Shared must be true")
    if s3.get("AuthenticationType") not in AUTH_TYPES:
        fail(b.where, f"AuthenticationType must be one of {sorted(AUTH_TYPES)}")
    if s3.get("AuthenticationType") == "iam":
        server = s3.get("ServerAddress", "")
        if server not in hosts:
            fail(b.where, f"ServerAddress {server!r} is not a host of the chart's s3Api.forward ({sorted(hosts)})")
        aliases = k.get("host_aliases", [])
        ips = {a["ip"] for a in aliases}
        names = {n for a in aliases if a["ip"] == address for n in a["hostnames"]}
        if ips != {address}:
            fail(b.where, f"host_aliases ip {sorted(ips)} is not the chart's node-local address {address}")
        if server not in names:
            fail(b.where, f"host_aliases does not map {server} to the node")
        if s3.get("PathStyle") is not True and f"{s3.get('BucketName')}.{server}" not in names:
            fail(b.where, "without PathStyle = true the bucket's virtual-host name must be aliased too")
        tls_s3 = v["tls"]["enabled"] and "s3" in v["tls"]["listeners"]
        want_insecure = port == 80 and not tls_s3
        if s3.get("Insecure", False) != want_insecure:
            fail(b.where, f"Insecure must be {want_insecure} for the chart's port {port} on the node")
        region = re.match(r"s3\.([a-z0-9-]+)\.amazonaws\.com$", server)
        if not region or s3.get("BucketLocation") != region.group(1):
            fail(b.where, f"BucketLocation {s3.get('BucketLocation')!r} is not the region of {server}")
        for f in forward:
            if server in f["hosts"] and f["endpoint"] != f"https://{server}":
                fail(b.where, f"the chart forwards {server} to {f['endpoint']}, not to https://{server}")
    if k.get("node_selector") != v["nodeSelector"]:
        fail(b.where, f"node_selector {k.get('node_selector')} differs from the chart's nodeSelector {v['nodeSelector']}")
    toleration_keys = {t.get("key") for t in v["tolerations"]}
    for taint in k.get("node_tolerations", {}):
        if taint.split("=")[0] not in toleration_keys:
            fail(b.where, f"the runner tolerates {taint}, which the chart's tolerations do not")
    if s3.get("BucketLocation") != v["config"]["s3"]["region"]:
        fail(b.where, "BucketLocation differs from the chart's config.s3.region")
    say(f"ok: {b.where}: GitLab Runner's keys, and the alias, host, port and region agree with the chart")


def check_runner_cache(b):
    try:
        doc = tomllib.loads(b.text)
    except tomllib.TOMLDecodeError as e:
        fail(b.where, f"not TOML: {e}")
        return
    cache = doc.get("runners", {}).get("cache")
    if cache is None:
        fail(b.where, "no [runners.cache]")
        return
    check_runner_keys(b.where, cache, "runners.cache")
    s3 = cache.get("s3", {})
    if b.name == "access-key":
        if "access-key" not in values_files:
            fail(b.where, "no chart-values access-key block before it")
            return
        v = merged_values("access-key")
        svc = next((d for d in renders.get("access-key", []) if d["kind"] == "Service"
                    and any(p["name"] == "s3" for p in d["spec"]["ports"])), None)
        if svc is not None:
            port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "s3")
            want = f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc:{port}"
        else:
            # The S3 listener is on the node-local address only.
            address, port = node_address(v)
            want = address if port == 80 else f"{address}:{port}"
        if s3.get("ServerAddress") != want:
            fail(b.where, f"ServerAddress {s3.get('ServerAddress')!r}: the chart's S3 front is at {want}")
        if s3.get("BucketName") not in {bk["name"] for bk in v["s3Api"]["buckets"]}:
            fail(b.where, f"BucketName {s3.get('BucketName')!r} is not one of the chart's s3Api.buckets")
        if s3.get("AuthenticationType") != "access-key":
            fail(b.where, 'AuthenticationType must be "access-key"')
        tls_s3 = v["tls"]["enabled"] and "s3" in v["tls"]["listeners"]
        if s3.get("Insecure", False) == tls_s3:
            fail(b.where, f"Insecure must be {not tls_s3}")
        grants = {c["accessKey"]: c["buckets"] for c in v["auth"]["s3Credentials"]}
        if not any(bks.get(s3.get("BucketName")) == "readwrite" for bks in grants.values()):
            fail(b.where, "no auth.s3Credentials key may write that bucket")
    if cache.get("Type") != "s3" or cache.get("Shared") is not True:
        fail(b.where, 'Type must be "s3" and Shared true')
    say(f"ok: {b.where}: GitLab Runner's keys; ServerAddress, bucket and key agree with the chart")


def check_settings_gradle(b):
    project = os.path.join(WORK, "settings-gradle")
    os.makedirs(project, exist_ok=True)
    # Gradle 4.4.1 (Debian's, the one the tests run) predates allowInsecureProtocol (6.0); the
    # line is the only one left out, and said so.
    kept = [l for l in b.text.splitlines() if "allowInsecureProtocol" not in l]
    dropped = len(b.text.splitlines()) - len(kept)
    settings = "rootProject.name = 'guide-check'\n" + "\n".join(kept) + "\n" + \
        "println 'guide-check remote url ' + buildCache.remote.url\n" + \
        "println 'guide-check local enabled ' + buildCache.local.enabled\n"
    open(os.path.join(project, "settings.gradle"), "w").write(settings)
    open(os.path.join(project, "build.gradle"), "w").write("")
    env = dict(os.environ, GRADLE_USER_HOME=os.path.join(WORK, "gradle-home"))
    env.pop("CI", None)
    out = run(["gradle", "--offline", "--no-daemon", "-q", "-p", project, "help"], env=env)
    if out.returncode != 0:
        fail(b.where, f"Gradle does not evaluate it:\n{out.stdout}{out.stderr}")
        return
    url = re.search(r"guide-check remote url (\S+)", out.stdout)
    docs = renders.get("base", [])
    svc = next((d for d in docs if d["kind"] == "Service" and d["spec"].get("internalTrafficPolicy") == "Local"), None)
    if svc is None:
        fail(b.where, "no node-local Service in the chart-values base render")
        return
    port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "gradle")
    want = f"http://{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc:{port}/cache/"
    if not url or url.group(1) != want:
        fail(b.where, f"Gradle's remote url is {url.group(1) if url else None}; the chart's Service is {want}")
    if "guide-check local enabled false" not in out.stdout:
        fail(b.where, "the local cache should be off in build pods")
    if "allowInsecureProtocol = true" not in b.text and want.startswith("http:"):
        fail(b.where, "http:// to a host name needs allowInsecureProtocol = true on Gradle 6.0+")
    say(f"ok: {b.where}: evaluated by Gradle ({dropped} line for Gradle 6+ left out); remote url {want}")


def check_build_gradle(b):
    client = open(os.path.join(REPO, "scripts", "guide", "PodRoleS3Upload.java")).read()
    # The client scripts/s3upload-check.sh tests is the one the guide builds.
    for call in ['"http://s3." + region + ".amazonaws.com", region', ".withPathStyleAccessEnabled(true)",
                 ".withCredentials(DefaultAWSCredentialsProviderChain.getInstance())"]:
        if call not in client:
            fail("scripts/guide/PodRoleS3Upload.java", f"no longer builds the client with {call}")
        if call.replace("DefaultAWSCredentialsProviderChain", "com.amazonaws.auth.DefaultAWSCredentialsProviderChain") \
                not in b.text and call not in b.text:
            fail(b.where, f"the client is not built as scripts/s3upload-check.sh tests it: no {call}")
    for needed, why in [("extends com.github.mgk.gradle.S3Upload", "the plugin's task"),
                        ("def getS3Client()", "the plugin's client hook"),
                        ("com.amazonaws:aws-java-sdk-sts:", "the STS module for web identity"),
                        ("gradle.plugin.com.github.mgk.gradle:s3:", "the plugin")]:
        if needed not in b.text:
            fail(b.where, f"missing {needed} ({why})")
    region = re.search(r"region\s*=\s*'([^']+)'", b.text)
    v = merged_values("base") if "base" in values_files else None
    if v and region:
        if not any(f"s3.{region.group(1)}.amazonaws.com" in f["hosts"] for f in v["s3Api"]["forward"]):
            fail(b.where, f"the chart does not forward s3.{region.group(1)}.amazonaws.com")
        k = runner_kubernetes() or {}
        names = {n for a in k.get("host_aliases", []) for n in a["hostnames"]}
        if f"s3.{region.group(1)}.amazonaws.com" not in names:
            fail(b.where, f"the runner's host_aliases do not send s3.{region.group(1)}.amazonaws.com to the node")
    say(f"ok: {b.where}: the client scripts/s3upload-check.sh tests, for a forwarded name the runner aliases")


def check_gitlab_ci(b):
    try:
        doc = yaml.safe_load(b.text)
    except yaml.YAMLError as e:
        fail(b.where, f"not YAML: {e}")
        return
    stages = doc.get("stages", ["build", "test", "deploy"])
    reserved = {"stages", "default", "variables", "cache", "include", "workflow", "image", "services"}
    for name in reserved & set(doc):
        if isinstance(doc[name], dict) and "script" in doc[name]:
            fail(b.where, f"{name!r} is a keyword of .gitlab-ci.yml, not a job name")
    files = (doc.get("cache") or {}).get("key", {})
    if isinstance(files, dict) and len(files.get("files", [])) > 2:
        fail(b.where, "cache:key:files takes at most two files")
    jobs = {k: j for k, j in doc.items() if isinstance(j, dict) and "script" in j and k not in reserved}
    for name, job in jobs.items():
        if job.get("stage", "test") not in stages:
            fail(b.where, f"job {name}: stage {job.get('stage')} is not in stages")
    scripts = {name: " ".join(j["script"]) for name, j in jobs.items()}
    if not any("--build-cache" in s and "gradlew" in s for s in scripts.values()):
        fail(b.where, "no job builds with --build-cache")
    if not any("s3Upload" in s for s in scripts.values()):
        fail(b.where, "no job runs s3Upload")
    if not any("kaniko" in str(j.get("image")) for j in jobs.values()):
        fail(b.where, "no Kaniko job")
    say(f"ok: {b.where}: YAML with jobs {', '.join(jobs)}")


def check_shell(b):
    path = os.path.join(WORK, f"block-{b.line}.sh")
    open(path, "w").write(b.text)
    out = run(["bash", "-n", path])
    if out.returncode != 0:
        fail(b.where, f"bash -n: {out.stderr}")
        return False
    return True


def check_node_bootstrap(b):
    if not check_shell(b):
        return
    v = merged_values("base") if "base" in values_files else None
    ip = node_address(v)[0] if v else "?"
    if f"Address={ip}/32" not in b.text:
        fail(b.where, f"does not put the chart's s3Api.hostPort.hostIP {ip} on the node")
    else:
        say(f"ok: {b.where}: bash -n, and it adds {ip}, the chart's host port address")


CHECKS = {
    "chart-values": check_chart_values,
    "daemon-config": check_daemon_config_block,
    "iam-policy": check_iam_policy,
    "iam-trust": check_iam_trust,
    "runner-values": check_runner_values,
    "runner-cache": check_runner_cache,
    "settings-gradle": check_settings_gradle,
    "build-gradle": check_build_gradle,
    "gitlab-ci": check_gitlab_ci,
    "node-bootstrap": check_node_bootstrap,
    "shell": check_shell,
    "json": lambda b: json_block(b),
    "yaml": lambda b: yaml.safe_load(b.text),
    "none": lambda b: None,
}
# Each of these must be in the guide: a block removed is a check lost.
REQUIRED = ["chart-values", "daemon-config", "iam-policy", "iam-trust", "runner-values",
            "runner-cache", "settings-gradle", "build-gradle", "gitlab-ci"]

# chart-values first (the others compare against them), then the runner, then the rest.
order = ["chart-values", "daemon-config", "runner-values", "runner-cache", "build-gradle"]
for b in sorted(blocks, key=lambda b: (order.index(b.kind) if b.kind in order else len(order), b.line)):
    check = CHECKS.get(b.kind)
    if check is None:
        fail(b.where, f"unknown kind '{b.kind}' (known: {', '.join(sorted(CHECKS))})")
        continue
    try:
        check(b)
    except Exception as e:  # a block too malformed for its checker
        fail(b.where, f"{type(e).__name__}: {e}")
for kind in REQUIRED:
    if not any(b.kind == kind for b in blocks):
        fail("docs/deploy-eks.md", f"no '{kind}' block: the guide must show it")

counts = {}
for b in blocks:
    counts[b.kind] = counts.get(b.kind, 0) + 1
say("blocks: " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items())))
if failures:
    say(f"{len(failures)} problem(s) in the guide")
    sys.exit(1)
say(f"all {len(blocks)} blocks of the guide checked")
