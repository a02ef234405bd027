"""SeaweedFS in the native runtime: no listener but the signed S3 endpoint does anything for a
caller without the stack's credentials, whatever the port, socket or protocol; the admin server
and its workers run quietly; and a data dir made before the internal HTTP APIs required a
client certificate still serves its objects."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from boto3.s3.transfer import TransferConfig

from mlflow_stack.native.s3 import SeaweedFSService, s3_port
from mlflow_stack.native.service import Layout
from mlflow_stack.native.tls import TlsFiles, ensure_internal_tls
from mlflow_stack.stores.storage import s3_client
from mlflow_stack.waiting import NotReady
from tests.conftest import LiveStack, distinct_free_ports, make_settings

#: Every TCP listener of the S3 service, by the name its port has in <data>/s3/ports.json
#: ("s3" is the endpoint of MLFLOW_STACK_S3_ENDPOINT_URL). The README lists these.
EXPECTED_ROLES = {
    "s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc",
    "admin", "admin_grpc",
}  # fmt: skip
#: What Go's TLS server answers a plaintext request with, before any handler sees it.
PLAINTEXT_TO_TLS = b"Client sent an HTTP request to an HTTPS server."
#: HTTP/2's connection preface and an empty SETTINGS frame: how a gRPC client starts.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
TIMEOUT = 5.0

Address = tuple[str, int] | Path  # a TCP port on loopback, or a unix socket


@dataclass(frozen=True)
class Intrusion:
    method: str
    path: str
    body: bytes | None = None


def intrusions(bucket: str, key: str, fid: str) -> list[Intrusion]:
    """Requests that read, write or delete through a master, volume server, filer or admin."""
    volume = fid.split(",", maxsplit=1)[0]
    return [
        Intrusion("GET", "/"),
        Intrusion("GET", f"/dir/assign?collection={bucket}"),
        Intrusion("GET", "/dir/status"),
        Intrusion("GET", f"/dir/lookup?volumeId={volume}"),
        Intrusion("GET", f"/col/delete?collection={bucket}"),
        Intrusion("GET", f"/vol/grow?collection={bucket}&count=1"),
        Intrusion("GET", "/vol/status"),
        Intrusion("GET", "/cluster/status"),
        Intrusion("GET", f"/{fid}"),
        Intrusion("POST", f"/{fid}", b"overwritten by an intruder"),
        Intrusion("DELETE", f"/{fid}"),
        Intrusion("GET", f"/buckets/{bucket}/{key}"),
        Intrusion("PUT", f"/buckets/{bucket}/intruder.txt", b"intruder"),
        Intrusion("DELETE", f"/buckets/{bucket}/{key}"),
        Intrusion("DELETE", f"/buckets/{bucket}/?recursive=true"),
        Intrusion("GET", "/health"),
        Intrusion("GET", "/metrics"),
        Intrusion("GET", "/api/cluster/topology"),
    ]


def weed_process(stack: LiveStack) -> psutil.Process:
    found = [p for p in stack.records()["s3"].group() if p.name() == "weed"]
    assert len(found) == 1, "the native stack's S3 server is not SeaweedFS"
    return found[0]


def tcp_listeners(proc: psutil.Process) -> set[int]:
    listening = [c for c in proc.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
    assert {c.laddr.ip for c in listening} == {"127.0.0.1"}
    return {c.laddr.port for c in listening}


def unix_listeners(proc: psutil.Process) -> set[Path]:
    """Paths of the unix sockets the process serves (accepted connections show them too)."""
    return {Path(c.laddr) for c in proc.net_connections(kind="unix") if c.laddr}


def roles(stack: LiveStack, ports: set[int]) -> dict[int, str]:
    named = json.loads((stack.data_dir / "s3" / "ports.json").read_text())
    by_port = {port: name for name, port in named.items()}
    by_port[s3_port(stack.settings.s3_endpoint_url)] = "s3"
    return {port: by_port.get(port, f"unknown:{port}") for port in ports}


def connect(address: Address) -> socket.socket:
    if isinstance(address, Path):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT)
        sock.connect(str(address))
        return sock
    return socket.create_connection(address, timeout=TIMEOUT)


def exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send the request, then read what comes back until the peer closes or goes quiet (an
    HTTP/2 server that accepted us keeps the connection open)."""
    sock.sendall(request)
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
            sock.settimeout(0.2)
    except TimeoutError:
        pass
    return answer


def raw_request(intrusion: Intrusion) -> bytes:
    body = intrusion.body or b""
    head = (
        f"{intrusion.method} {intrusion.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def refused(answer: bytes) -> bool:
    """No answer, a TLS-only listener's plaintext rejection, or 401/403."""
    if not answer or (answer.startswith(b"HTTP/1.0 400 ") and PLAINTEXT_TO_TLS in answer):
        return True
    status = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    return bool(status) and status.group(1) in (b"401", b"403")


def plain(address: Address, intrusion: Intrusion) -> bytes:
    try:
        with connect(address) as sock:
            return exchange(sock, raw_request(intrusion))
    except (ConnectionError, OSError):
        return b""


def over_tls(address: Address, request: bytes, *, alpn: list[str], tls: TlsFiles | None) -> bytes:
    """Send ``request`` over TLS, presenting the stack's certificate only when ``tls`` is given
    (the server's certificate is not checked: this is the intruder's side)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(alpn)
    if tls is not None:
        context.load_cert_chain(tls.cert, tls.key)
    try:
        with connect(address) as raw, context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            if sock.selected_alpn_protocol() == "h2":
                request = H2_PREFACE
            return exchange(sock, request)
    except (ssl.SSLError, ConnectionError, OSError):
        return b""


def attempts(address: Address, bucket: str, key: str, fid: str) -> Iterator[tuple[str, bytes]]:
    """Every request without credentials: plain HTTP, HTTPS and gRPC's TLS, no certificate."""
    for intrusion in intrusions(bucket, key, fid):
        what = f"{intrusion.method} {intrusion.path}"
        yield f"http {what}", plain(address, intrusion)
        request = raw_request(intrusion)
        yield f"https {what}", over_tls(address, request, alpn=["http/1.1"], tls=None)
    yield "grpc", over_tls(address, H2_PREFACE, alpn=["h2"], tls=None)


def chunk_fids(stack: LiveStack, key: str) -> list[str]:
    """The volume file ids holding an object, as the stack's own `weed shell` sees them."""
    ports = json.loads((stack.data_dir / "s3" / "ports.json").read_text())
    shell = [
        str(SeaweedFSService.find_binary()), "shell",
        f"-master=127.0.0.1:{ports['master']}.{ports['master_grpc']}",
        f"-filer=127.0.0.1:{ports['filer']}.{ports['filer_grpc']}",
    ]  # fmt: skip
    done = subprocess.run(
        shell,
        input=f"fs.meta.cat /buckets/{stack.settings.s3_bucket}/{key}\nexit\n",
        cwd=stack.data_dir / "s3",  # its security.toml and certificate
        env={"PATH": os.environ["PATH"], "HOME": str(stack.data_dir / "s3")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    fids = re.findall(r'"fileId":\s*"([^"]+)"', done.stdout)
    assert fids, done.stdout + done.stderr
    return fids


@dataclass(frozen=True)
class Snapshot:
    buckets: list[str]
    objects: dict[str, str]  # key -> ETag
    volumes: list[str]  # the bucket's volume files (a vacuum may resize them, not add any)

    @classmethod
    def take(cls, stack: LiveStack) -> Snapshot:
        s3, bucket = stack.s3(), stack.settings.s3_bucket
        keys: dict[str, str] = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys.update({o["Key"]: o["ETag"] for o in page.get("Contents", [])})
        volumes = stack.data_dir / "s3" / "data"
        return cls(
            buckets=sorted(b["Name"] for b in s3.list_buckets()["Buckets"]),
            objects=keys,
            volumes=sorted(path.name for path in volumes.glob(f"{bucket}_*")),
        )


def test_no_seaweedfs_listener_but_the_s3_endpoint_serves_a_caller_without_credentials(
    stack: LiveStack,
) -> None:
    bucket, key = stack.settings.s3_bucket, f"listeners/{uuid.uuid4().hex}.bin"
    secret = os.urandom(64 * 1024)
    stack.s3().put_object(Bucket=bucket, Key=key, Body=secret)
    (fid,) = chunk_fids(stack, key)
    before = Snapshot.take(stack)

    weed = weed_process(stack)
    named = roles(stack, tcp_listeners(weed))  # whatever listens is probed, known or not
    s3_socket = stack.data_dir / "s3" / "s3.sock"  # the S3 endpoint again, in a private dir
    targets: list[tuple[str, Address]] = [
        (name, ("127.0.0.1", port)) for port, name in sorted(named.items()) if name != "s3"
    ]
    sockets = sorted(unix_listeners(weed) - {s3_socket})
    targets += [(f"unix {path}", path) for path in sockets]

    accepted = [
        f"{name}: {how} -> {answer[:80]!r}"
        for name, address in targets
        for how, answer in attempts(address, bucket, key, fid)
        if not refused(answer)
    ]
    assert not accepted, f"{len(accepted)} requests without credentials were served:\n" + (
        "\n".join(accepted)
    )
    assert stack.s3().get_object(Bucket=bucket, Key=key)["Body"].read() == secret
    assert Snapshot.take(stack) == before
    assert set(named.values()) == EXPECTED_ROLES

    # The probes could tell: each TCP listener does answer a client with the stack's certificate.
    tls = ensure_internal_tls(stack.data_dir / "s3" / "tls")
    hello = raw_request(Intrusion("GET", "/health"))
    silent = [
        name
        for name, address in targets
        if isinstance(address, tuple)
        and not over_tls(address, hello, alpn=["h2", "http/1.1"], tls=tls)
    ]
    assert not silent, f"no answer to the stack's certificate from {silent}"


def test_seaweedfs_logs_no_admin_or_worker_warnings(stack: LiveStack) -> None:
    """`weed mini` always runs its admin server and workers: they must find it, quietly."""
    up_for = time.time() - weed_process(stack).create_time()
    time.sleep(max(0.0, 12.0 - up_for))  # the workers retried every 5 s when they could not
    logs = sorted((stack.data_dir / "logs").glob("s3.log*"))
    text = "\n".join(path.read_text(errors="replace") for path in logs)
    assert "Starting SeaweedFS Mini" in text
    glog_problem = re.compile(r"^[WEF]\d{4} ")
    topic = re.compile(r"worker|admin|reconnect|connection refused", re.IGNORECASE)
    noisy = [line for line in text.splitlines() if glog_problem.match(line) and topic.search(line)]
    assert not noisy, "\n".join(noisy[:10])
    assert not re.search(r"^\s+Admin\s+failed", text, re.MULTILINE)


# --- a data dir from before: internal HTTP without TLS, admin gRPC port anywhere -----------


def legacy_security_toml(tls: TlsFiles) -> str:
    """What security.toml held before the HTTP APIs required the stack's certificate."""
    text = "".join(
        f'[{section}]\nkey = "{os.urandom(32).hex()}"\nexpires_after_seconds = 60\n\n'
        for section in ("jwt.signing", "jwt.signing.read", "jwt.filer_signing",
                        "jwt.filer_signing.read")
    )  # fmt: skip
    text += f'[grpc]\nca = "{tls.ca}"\n\n'
    for component in SeaweedFSService.GRPC_COMPONENTS:
        text += f'[grpc.{component}]\ncert = "{tls.cert}"\nkey = "{tls.key}"\n\n'
    return text + "[access]\nui = false\n"


def run_until_healthy(service: SeaweedFSService, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            service.command(),
            cwd=service.workdir,
            env=service.environment(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + service.start_timeout
    while True:
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            service.check()
            return proc
        except NotReady:
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.3)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=SeaweedFSService.stop_timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail("SeaweedFS did not stop on SIGTERM")


def test_a_data_dir_from_before_the_internal_tls_keeps_serving_its_objects(
    tmp_path: Path,
) -> None:
    (port,) = distinct_free_ports(1)
    settings = make_settings(MLFLOW_STACK_S3_ENDPOINT_URL=f"http://127.0.0.1:{port}")
    layout = Layout(tmp_path)
    layout.create()
    service = SeaweedFSService(settings, layout)
    ports_file = service.home / "ports.json"

    # The old layout: security.toml without [https.*], the admin's gRPC port anywhere. (The
    # command line differs only by -idleTimeout, which is not kept; with the old 30 s, this
    # SIGTERM could take 31 s.)
    service.prepare()
    service.ports()
    old = json.loads(ports_file.read_text())
    old["admin_grpc"] = next(
        port for port in distinct_free_ports(5)
        if port not in old.values() and port != old["admin"] + SeaweedFSService.ADMIN_GRPC_OFFSET
    )  # fmt: skip
    ports_file.write_text(json.dumps(old))
    tls = ensure_internal_tls(service.home / "tls")
    (service.home / "security.toml").write_text(legacy_security_toml(tls))
    objects = {"small.txt": b"written before", "large.bin": os.urandom(24 * 2**20)}
    proc = run_until_healthy(service, layout.log("s3"))
    try:
        client = s3_client(settings, timeout=30)
        client.create_bucket(Bucket=settings.s3_bucket)
        client.put_object(Bucket=settings.s3_bucket, Key="small.txt", Body=objects["small.txt"])
        in_parts = TransferConfig(multipart_threshold=8 * 2**20, multipart_chunksize=8 * 2**20)
        client.upload_fileobj(
            io.BytesIO(objects["large.bin"]), settings.s3_bucket, "large.bin", Config=in_parts
        )
        assert client.head_object(Bucket=settings.s3_bucket, Key="large.bin")["ETag"].endswith(
            '-3"'
        )
    finally:
        stop(proc)

    service = SeaweedFSService(settings, layout)  # as `mlflow-stack up` does after the upgrade
    service.prepare()
    service.ports()
    new = json.loads(ports_file.read_text())
    kept = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3_grpc")
    assert {k: new[k] for k in kept} == {k: old[k] for k in kept}  # the master's state: m<port>
    assert new["admin_grpc"] == new["admin"] + SeaweedFSService.ADMIN_GRPC_OFFSET
    assert "[https.volume]" in (service.home / "security.toml").read_text()
    proc = run_until_healthy(service, layout.log("s3"))
    try:
        # Read as the MLflow server reads, with botocore's retries: healthy means the S3 gateway
        # lists buckets, and for a moment after a restart a read may still meet a 500 while the
        # volume server registers its volumes (seen once in a fresh CI run).
        client = s3_client(settings, timeout=30, attempts=5)
        for key, body in objects.items():
            got = client.get_object(Bucket=settings.s3_bucket, Key=key)["Body"].read()
            assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest(), key
        client.put_object(Bucket=settings.s3_bucket, Key="after.txt", Body=b"written after")
        assert client.get_object(Bucket=settings.s3_bucket, Key="after.txt")["Body"].read() == (
            b"written after"
        )
    finally:
        stop(proc)
