#!/usr/bin/env python3
"""What GitLab Runner's manager does before a job: presign the cache archive's PUT, GET and
HEAD URLs with the S3 keys it is configured with, and (when BucketLocation is empty) ask the
ServerAddress for the bucket's location with a header-signed GetBucketLocation.

    runner_presign.py presign minio|boto3 ENDPOINT ACCESS SECRET BUCKET KEY EXPIRES CACHEKEY
        prints three lines "put URL", "get URL", "head URL"
    runner_presign.py location ENDPOINT ACCESS SECRET BUCKET
        prints the LocationConstraint ("" for us-east-1)

Only the URLs come from here; the tests send the HTTP requests themselves, as the runner's
helper does in the build pod.
"""
import sys
from datetime import timedelta

REGION = "us-east-1"


def boto3_client(endpoint, access, secret):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name=REGION,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def presign_minio(endpoint, access, secret, bucket, key, expires, cachekey):
    from minio import Minio

    host = endpoint.split("://", 1)[1].rstrip("/")
    # With the region given, minio never asks the server for it: presigning is offline.
    client = Minio(host, access_key=access, secret_key=secret, secure=False, region=REGION)
    ttl = timedelta(seconds=expires)
    # minio-py's presigning signs the host header only (it has no way to sign extra headers),
    # so the helper's x-amz-meta-cachekey travels unsigned with these URLs.
    return {
        "put": client.presigned_put_object(bucket, key, expires=ttl),
        "get": client.presigned_get_object(bucket, key, expires=ttl),
        "head": client.get_presigned_url("HEAD", bucket, key, expires=ttl),
    }


def presign_boto3(endpoint, access, secret, bucket, key, expires, cachekey):
    client = boto3_client(endpoint, access, secret)
    # Metadata in the params makes botocore sign x-amz-meta-cachekey into the PUT URL, as the
    # runner's s3v2 adapter does.
    return {
        "put": client.generate_presigned_url(
            "put_object",
            Params={"Bucket": bucket, "Key": key, "Metadata": {"cachekey": cachekey}},
            ExpiresIn=expires,
        ),
        "get": client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires
        ),
        "head": client.generate_presigned_url(
            "head_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires
        ),
    }


def main(argv):
    if argv[1] == "presign":
        tool, endpoint, access, secret, bucket, key, expires, cachekey = argv[2:10]
        presign = {"minio": presign_minio, "boto3": presign_boto3}[tool]
        urls = presign(endpoint, access, secret, bucket, key, int(expires), cachekey)
        for method in ("put", "get", "head"):
            print(method, urls[method])
    elif argv[1] == "location":
        endpoint, access, secret, bucket = argv[2:6]
        answer = boto3_client(endpoint, access, secret).get_bucket_location(Bucket=bucket)
        print(answer.get("LocationConstraint") or "")
    else:
        sys.exit(f"unknown command {argv[1]!r}")


if __name__ == "__main__":
    main(sys.argv)
