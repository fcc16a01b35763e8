"""Resolves host names to loopback addresses for the Python clients the tests run (boto3, the
aws CLI), as a cluster's DNS or a pod's host alias would: BCP_TEST_RESOLVE="name=address,..."
(ports stay as the client has them). Python imports this module at startup when its directory
is on PYTHONPATH; nothing else in the client changes.
"""
import os
import socket

_MAP = dict(
    pair.split("=", 1)
    for pair in os.environ.get("BCP_TEST_RESOLVE", "").split(",")
    if "=" in pair
)
_getaddrinfo = socket.getaddrinfo


def _resolving_getaddrinfo(host, *args, **kwargs):
    if isinstance(host, bytes):
        host = host.decode()
    return _getaddrinfo(_MAP.get(host, host), *args, **kwargs)


if _MAP:
    socket.getaddrinfo = _resolving_getaddrinfo
