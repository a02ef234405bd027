"""The native S3 server's memory stays bounded after a burst of transfers: `up` gives its Go
heap a soft limit (GOMEMLIMIT, `--s3-memory-limit`, 384M by default). Without it, a bare
`weed mini` stayed at 1.4 GB resident after 1 GB had moved through it, and at about 250 MB
with it (docs/performance.md); the stack's own held 1,270 MB after the uploads below."""

from __future__ import annotations

import io
import os
import uuid
from concurrent.futures import ThreadPoolExecutor

from mlflow_stack.native.s3 import S3_MEMORY_LIMIT
from tests.conftest import LiveStack

MB = 2**20


def test_the_s3_servers_heap_is_limited_and_a_burst_of_transfers_leaves_it_small(
    stack: LiveStack,
) -> None:
    server = stack.server("s3")
    assert server is not None, "the S3 server is not running"
    assert server.environ()["GOMEMLIMIT"] == str(S3_MEMORY_LIMIT)

    s3, bucket = stack.s3(), stack.settings.s3_bucket
    prefix = f"memory-test-{uuid.uuid4().hex[:8]}"
    small, large = os.urandom(MB), os.urandom(100 * MB)

    def put_small(i: int) -> None:
        s3.put_object(Bucket=bucket, Key=f"{prefix}/small/{i}", Body=small)

    def put_large(i: int) -> None:
        s3.upload_fileobj(io.BytesIO(large), bucket, f"{prefix}/large/{i}")

    keys = [f"{prefix}/small/{i}" for i in range(100)] + [f"{prefix}/large/{i}" for i in range(3)]
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(put_small, range(100)))
            list(pool.map(put_large, range(3)))
        sizes = [s3.head_object(Bucket=bucket, Key=key)["ContentLength"] for key in keys]
        assert sizes == [MB] * 100 + [100 * MB] * 3  # 400 MB uploaded
        resident = server.memory_info().rss
        assert resident < 2 * S3_MEMORY_LIMIT, f"{resident / MB:.0f} MB resident after the burst"
    finally:
        for start in range(0, len(keys), 1000):
            objects = [{"Key": key} for key in keys[start : start + 1000]]
            s3.delete_objects(Bucket=bucket, Delete={"Objects": objects})
