"""A real S3-compatible server for the tests (moto in server mode) and a fresh bucket per test."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    from tests.conftest import _free_port

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint, monkeypatch):
    """(boto3 client, bucket name); the credentials are in the environment, so worker processes
    started by the test reach the same server."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    name = f"tailor-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=name)
    return client, name
