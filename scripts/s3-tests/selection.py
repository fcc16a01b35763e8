"""Chooses the ceph/s3-tests tests that scripts/s3-tests.sh scores, and sorts them into groups.

Reads s3tests/functional/test_s3.py of the checkout given (its syntax tree only: names and
pytest markers; nothing of the suite is copied here) and prints one line per chosen test,
"<group> <test name>", or with --left-out one line per test a pattern matched but a rule
left out: "<group> <test name> <reason>".

A test belongs to the first group whose pattern its name matches; tests no pattern matches
are not part of the selection. Then it is left out if it carries a marker, or its name
matches a pattern, of a feature outside the front's API (below, each with the reason).
"""
import ast
import re
import sys

# (group, name pattern), first match wins: conditional before copy and object, so that
# test_copy_object_ifmatch_good counts as conditional.
GROUPS = [
    ("conditional", r"if_?match|if_?none?_?match|if_?modified|if_?unmodified|conditional"),
    ("range", r"^test_ranged_|_get_part$"),
    ("sigv4", r"x_amz_expires|raw_authenticated|raw_put_authenticated|put_authenticated"
              r"|presigned|anon|bad_auth|signature|^test_object_raw_"),
    ("copy", r"copy"),
    ("multipart", r"multipart"),
    ("listing", r"^test_bucket_list|^test_bucket_listv2|^test_list_buckets|^test_buckets_"
                r"|^test_basic_key_count"),
    ("object", r"^test_object_|^test_get_object|^test_put_object|^test_delete_object"
               r"|^test_multi_object_delete|^test_multi_objectv2_delete|^test_object_head"
               r"|^test_atomic_|^test_100_continue"),
]

# Markers of features the front does not offer (docs/s3-front.md lists its operations), with
# why each is left out of the score.
MARKERS = {
    "fails_on_aws": "AWS S3 itself fails it (RGW-specific behaviour)",
    "versioning": "versioning: the front has no versions",
    "delete_marker": "versioning: the front has no versions",
    "encryption": "SSE-C / SSE-KMS: not offered by the front",
    "sse_s3": "SSE-S3: not offered by the front",
    "bucket_encryption": "bucket encryption config: not offered by the front",
    "object_lock": "object lock: not offered by the front",
    "tagging": "tagging: not offered by the front",
    "lifecycle": "lifecycle: not offered by the front",
    "lifecycle_expiration": "lifecycle: not offered by the front",
    "lifecycle_transition": "lifecycle: not offered by the front",
    "bucket_policy": "bucket policies: access is per key in the daemon's config",
    "user_policy": "IAM: access is per key in the daemon's config",
    "iam_account": "IAM: access is per key in the daemon's config",
    "iam_user": "IAM: access is per key in the daemon's config",
    "iam_tenant": "tenants: RGW-only",
    "bucket_logging": "bucket logging: not offered by the front",
    "storage_class": "storage classes: not offered by the front",
    "cloud_transition": "cloud tiering: RGW-only",
    "cloud_restore": "cloud tiering: RGW-only",
    "s3website": "website hosting: not offered by the front",
    "appendobject": "append: RGW-only",
    "object_ownership": "object ownership controls: not offered by the front",
    "auth_aws2": "signature V2: AWS has deprecated it; the front speaks SigV4 only",
    "s3select": "S3 Select: not offered by the front",
}

# Name patterns of features outside the front, with why.
NAMES = [
    (r"acl", "ACLs: access is per key in the daemon's config"),
    (r"_v2$|_aws2$", "signature V2: the front speaks SigV4 only"),
    (r"tenant", "tenants: RGW-only"),
    (r"^test_post_object|_post_object_", "browser POST uploads: not offered by the front"),
    (r"cors", "CORS: not offered by the front"),
    (r"torrent", "torrent: not offered by the front"),
    (r"attributes", "GetObjectAttributes: not offered by the front"),
    (r"versioned|versioning|_version_|current", "versioning: the front has no versions"),
    (r"sse_c|sse_kms|_enc$|encryption|kms", "server-side encryption: not offered by the front"),
    (r"tagging|_tags_", "tagging: not offered by the front"),
    (r"lock", "object lock: not offered by the front"),
    (r"policy", "bucket policies: access is per key in the daemon's config"),
]


def markers(node):
    found = set()
    for deco in node.decorator_list:
        text = ast.unparse(deco)
        m = re.match(r"pytest\.mark\.(\w+)", text)
        if m:
            found.add(m.group(1))
    return found


def main():
    checkout = sys.argv[1]
    left_out_mode = "--left-out" in sys.argv[2:]
    path = f"{checkout}/s3tests/functional/test_s3.py"
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef) or not node.name.startswith("test_"):
            continue
        group = next((g for g, p in GROUPS if re.search(p, node.name)), None)
        if group is None:
            continue
        reason = next((MARKERS[m] for m in sorted(markers(node)) if m in MARKERS), None)
        if reason is None:
            reason = next((r for p, r in NAMES if re.search(p, node.name)), None)
        if left_out_mode:
            if reason is not None:
                print(f"{group} {node.name} {reason}")
        elif reason is None:
            print(f"{group} {node.name}")


if __name__ == "__main__":
    main()
