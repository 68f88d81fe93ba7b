"""A local S3 server for the tests (moto's server mode, on 127.0.0.1) and fresh buckets
on it, each with the `[storage]` sections that point at it."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bot.config import S3Config, StorageConfig

# What the server accepts; the bot reads them from the environment, as in production.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "atelier-test",
    "AWS_SECRET_ACCESS_KEY": "atelier-test-secret",
    "AWS_REGION": "us-east-1",
}


@contextmanager
def s3_server() -> Iterator[str]:
    """A moto S3 server on a free port; its endpoint URL."""
    from moto.server import ThreadedMotoServer  # imported by the tests that use it only

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@dataclass(frozen=True)
class Bucket:
    endpoint: str
    name: str
    prefix: str

    def client(self):  # type: ignore[no-untyped-def]  # boto3 ships no types
        """A boto3 client, to look at the bucket as an operator's tools would."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_REGION"],
        )

    def keys(self) -> set[str]:
        """Every object's key under the prefix, the prefix taken off."""
        listed = self.client().list_objects_v2(Bucket=self.name, Prefix=f"{self.prefix}/")
        return {item["Key"].removeprefix(f"{self.prefix}/") for item in listed.get("Contents", [])}

    def read(self, key: str) -> bytes:
        """An object's bytes, by its key under the prefix."""
        got = self.client().get_object(Bucket=self.name, Key=f"{self.prefix}/{key}")
        return bytes(got["Body"].read())

    def storage(self, data_dir: Path) -> StorageConfig:
        config = S3Config(bucket=self.name, endpoint=self.endpoint, prefix=self.prefix)
        return StorageConfig(data_dir=data_dir, backend="s3", s3=config)

    def toml(self) -> str:
        """The [storage] sections of a config file using this bucket."""
        return f"""
[storage]
backend = "s3"

[storage.s3]
bucket = "{self.name}"
endpoint = "{self.endpoint}"
prefix = "{self.prefix}"
"""


def new_bucket(endpoint: str) -> Bucket:
    bucket = Bucket(endpoint, f"atelier-{secrets.token_hex(4)}", "atelier")
    bucket.client().create_bucket(Bucket=bucket.name)
    return bucket
