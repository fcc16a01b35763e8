"""STS's AssumeRoleWithWebIdentity under STS's own name, over HTTPS, for scripts/s3upload-check.sh.

The SDK's web identity provider posts the pod's projected token and role here. This answers with
real temporary credentials for that role from SeaweedFS's own STS (AssumeRole, signed with the
static test identity), so the S3 side (SeaweedFS) verifies the session token as S3 would. It
appends each request's form fields to a log, so the check can see which role and token came.
Usage: fake_sts.py ADDRESS PORT CERT KEY SEAWEEDFS_ENDPOINT LOG
"""
import http.server
import json
import ssl
import sys
import urllib.parse

import boto3

address, port, cert, key, seaweedfs, log = sys.argv[1:7]
seaweedfs_sts = boto3.client("sts", endpoint_url=seaweedfs, aws_access_key_id="AK",
                             aws_secret_access_key="SK", region_name="us-east-1")

ANSWER = """<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <AccessKeyId>{access}</AccessKeyId>
      <SecretAccessKey>{secret}</SecretAccessKey>
      <SessionToken>{token}</SessionToken>
      <Expiration>{expiration}</Expiration>
    </Credentials>
    <SubjectFromWebIdentityToken>guide-check</SubjectFromWebIdentityToken>
    <AssumedRoleUser>
      <Arn>{role}/guide-check</Arn>
      <AssumedRoleId>AROAGUIDECHECK:guide-check</AssumedRoleId>
    </AssumedRoleUser>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>guide-check</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>
"""


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        form = {k: v[0] for k, v in urllib.parse.parse_qs(self.rfile.read(length).decode()).items()}
        with open(log, "a") as out:
            out.write(json.dumps({"host": self.headers.get("Host"), **form}) + "\n")
        if form.get("Action") != "AssumeRoleWithWebIdentity":
            self.send_error(400, "only AssumeRoleWithWebIdentity")
            return
        role = form.get("RoleArn", "")
        granted = seaweedfs_sts.assume_role(RoleArn=role, RoleSessionName=form.get("RoleSessionName", "guide-check"))
        c = granted["Credentials"]
        body = ANSWER.format(access=c["AccessKeyId"], secret=c["SecretAccessKey"], token=c["SessionToken"],
                             expiration=c["Expiration"].strftime("%Y-%m-%dT%H:%M:%SZ"), role=role).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.HTTPServer((address, int(port)), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
