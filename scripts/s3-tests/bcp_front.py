"""A pytest plugin that scripts/s3-tests.sh loads for the run against the daemon's S3 front only.

The front serves the buckets of its config and implements neither CreateBucket nor DeleteBucket
(both are answered 501 NotImplemented), while every ceph/s3-tests test begins by creating a
bucket named "<prefix><n>" (n counting up in the test process) and ends by deleting every bucket
whose name holds the prefix, listing it with ListObjectVersions first (also 501 on the front).
So, for the front run only, this plugin:

- relies on the daemon being configured with "<prefix>1" ... "<prefix><pool>"
  (BCP_S3TESTS_BUCKETS, comma-separated), enough for every bucket of the run, so each name is
  used once (reusing names would show what the backend keeps of a previous test: SeaweedFS
  lists the "directories" of deleted keys as common prefixes, under a key prefix);
- answers CreateBucket of one of those names on the client side, after emptying the bucket
  through the front (objects and unfinished multipart uploads), so the test starts on an existing,
  empty bucket as it expects; CreateBucket of any other name goes to the front as sent;
- answers DeleteBucket of one of those names on the client side when the bucket is empty (it
  stays configured and reachable, so a test that expects NoSuchBucket afterwards fails); a
  non-empty one goes to the front as sent;
- replaces the suite's per-test bucket cleanup (setup and teardown) with nothing: the next
  CreateBucket empties the bucket.

Everything else a test sends reaches the front unchanged. The SeaweedFS run uses none of this.
"""
import os

import boto3
import pytest
import botocore.config
from botocore.awsrequest import AWSResponse

POOL = frozenset(b for b in os.environ.get("BCP_S3TESTS_BUCKETS", "").split(",") if b)
ENDPOINT = os.environ.get("BCP_S3TESTS_ENDPOINT", "")
ACCESS_KEY = os.environ.get("BCP_S3TESTS_ACCESS_KEY", "")
SECRET_KEY = os.environ.get("BCP_S3TESTS_SECRET_KEY", "")

_admin = None


def admin():
    """A client of its own session, so this plugin's handlers never see its requests."""
    global _admin
    if _admin is None:
        _admin = boto3.session.Session().client(
            "s3",
            endpoint_url=ENDPOINT,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=botocore.config.Config(
                signature_version="s3v4", s3={"addressing_style": "path"}
            ),
        )
    return _admin


def keys(bucket):
    out = []
    for page in admin().get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out.extend(o["Key"] for o in page.get("Contents", []))
    return out


def empty(bucket):
    client = admin()
    while True:
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        for u in uploads:
            client.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
        if not uploads:
            break
    while True:
        found = keys(bucket)
        if not found:
            return
        for i in range(0, len(found), 1000):
            client.delete_objects(
                Bucket=bucket,
                Delete={"Objects": [{"Key": k} for k in found[i : i + 1000]], "Quiet": True},
            )


def answer(status, parsed):
    parsed = dict(parsed)
    parsed["ResponseMetadata"] = {"HTTPStatusCode": status, "HTTPHeaders": {}, "RetryAttempts": 0}
    return AWSResponse(ENDPOINT, status, {}, None), parsed


def bucket_of(context):
    """The Bucket parameter the test gave (before-call's `params` is the serialized request)."""
    return (context or {}).get("input_params", {}).get("Bucket")


def create_bucket(context=None, **_):
    bucket = bucket_of(context)
    if bucket not in POOL:
        return None
    empty(bucket)
    return answer(200, {"Location": f"/{bucket}"})


def delete_bucket(context=None, **_):
    bucket = bucket_of(context)
    if bucket not in POOL or keys(bucket):
        return None
    return answer(204, {})


def pytest_configure(config):
    events = boto3._get_default_session().events
    events.register("before-call.s3.CreateBucket", create_bucket)
    events.register("before-call.s3.DeleteBucket", delete_bucket)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    import s3tests.functional as suite

    suite.setup = lambda: None
    suite.teardown = lambda: None
