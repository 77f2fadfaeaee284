"""A real S3 API on loopback for the tests: moto's server in its own process, with IAM checks on.

`moto_s3()` starts `python -m moto.server` on a free port of 127.0.0.1 with request signing enforced
(INITIAL_NO_AUTH_ACTION_COUNT: the first three requests, which create the test user and its key,
are the only unsigned ones), so wrong credentials are refused as by AWS. Commands under test reach it
through the standard boto configuration only: AWS_ENDPOINT_URL and the AWS_* key variables.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from urllib.request import urlopen

ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    env: dict = field(default_factory=dict)  # what a command needs: endpoint, region, key id and secret
    proc: subprocess.Popen | None = None

    def url(self, name: str = "") -> str:
        """A fresh prefix in the test bucket: s3://bucket/<name>-<random>."""
        return f"s3://{self.bucket}/{name or 'data'}-{uuid.uuid4().hex[:8]}"

    def fs(self):
        """An s3fs filesystem with the test credentials (a fresh instance, no listing cache)."""
        import s3fs

        return s3fs.S3FileSystem(key=self.env["AWS_ACCESS_KEY_ID"], secret=self.env["AWS_SECRET_ACCESS_KEY"],
                                 endpoint_url=self.endpoint, skip_instance_cache=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def moto_s3() -> S3Server:
    """Start the server, create a user allowed everything, its access key and one bucket."""
    import boto3

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while True:
        try:
            urlopen(f"{endpoint}/moto-api/", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"moto server did not start on {endpoint}") from None
            time.sleep(0.3)
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id="setup", aws_secret_access_key="setup")
    iam.create_user(UserName="dora")
    iam.put_user_policy(UserName="dora", PolicyName="all", PolicyDocument=json.dumps(ALLOW_ALL))
    key = iam.create_access_key(UserName="dora")["AccessKey"]
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
           "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"], "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    server = S3Server(endpoint, "dora-test", env, proc)
    server.fs().mkdir(server.bucket)
    return server
