"""Tests of panns_infer.hub against a loopback HTTP server (never the internet)."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import FIXTURES
from http_server import LoopbackServer
from panns_infer import hub, labels, registry, transport
from panns_infer.errors import (
    CheckpointError,
    ChecksumError,
    DownloadError,
    LabelsError,
    OfflineError,
    PannsError,
)

REPO = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = FIXTURES
LABELS_CSV = SHARED_FIXTURES / "class_labels_indices.csv"


def payload(n: int, seed: int = 0) -> bytes:
    """n deterministic, non-repeating bytes (so a misplaced resume changes the hash)."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:n])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    """Files in ``folder`` other than lock files (which filelock may leave behind)."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(transport, "_BACKOFF_BASE", 0.001)


@pytest.fixture
def server(loopback_server) -> LoopbackServer:
    return loopback_server


@pytest.fixture
def cache() -> Path:
    return hub.cache_dir()


# --------------------------------------------------------------------------- settings


def test_cache_dir_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv("PANNS_INFER_CACHE", str(tmp_path / "elsewhere"))
    assert hub.cache_dir() == tmp_path / "elsewhere"
    assert hub.checkpoint_path("Cnn14") == tmp_path / "elsewhere" / "checkpoints" / "Cnn14_mAP=0.431.pth"
    monkeypatch.delenv("PANNS_INFER_CACHE")
    assert hub.cache_dir().name == "panns_infer"


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("YES", True), ("on", True),
                                             ("0", False), ("", False), ("no", False)])
def test_is_offline_reads_env(monkeypatch, value, expected):
    monkeypatch.setenv("PANNS_INFER_OFFLINE", value)
    assert hub.is_offline() is expected
    assert hub.is_offline(True) is True and hub.is_offline(False) is False  # the argument wins


def test_bad_checksum_spec_is_a_value_error(server, cache):
    url = server.serve("/x.bin", b"abc")
    for bad in ("abc", "sha1:" + "0" * 40, "sha256:xyz", "md5:" + "0" * 31):
        with pytest.raises(ValueError):
            hub.fetch(url, cache / "x.bin", checksum=bad)
    assert server.count("/x.bin") == 0


# --------------------------------------------------------------------------- fetch: good paths


def test_fetch_downloads_once_then_uses_cache(server, cache):
    data = payload(200_000)
    url = server.serve("/a.bin", data)
    dest = cache / "sub" / "a.bin"
    assert hub.fetch(url, dest, checksum=sha256(data), expected_size=len(data)) == dest
    assert dest.read_bytes() == data
    assert hub.fetch(url, dest, checksum=sha256(data)) == dest
    assert server.count("/a.bin") == 1
    assert leftovers(dest.parent) == ["a.bin"]


def test_md5_checksum_is_accepted(server, cache):
    data = payload(1000)
    url = server.serve("/m.bin", data)
    hub.fetch(url, cache / "m.bin", checksum="md5:" + hashlib.md5(data).hexdigest().upper())
    assert (cache / "m.bin").read_bytes() == data


def test_truncated_bodies_are_resumed(server, cache):
    # every answer announces the full length but stops early; only Range resumption can finish,
    # and it needs more tries than `retries` allows, which is fine since each try makes progress
    data = payload(6 * transport._CHUNK + 777)
    url = server.serve("/t.bin", data, truncate_after=2 * transport._CHUNK + 100)
    dest = hub.fetch(url, cache / "t.bin", checksum=sha256(data), retries=1)
    assert dest.read_bytes() == data
    records = server.records("/t.bin")
    assert len(records) >= 3
    assert records[0].range is None
    starts = [int(r.range[len("bytes="):-1]) for r in records[1:]]
    assert all(0 < a < b for a, b in zip(starts, starts[1:])), starts
    assert all(r.status == 206 for r in records[1:])


def test_connection_reset_mid_body_is_resumed_with_range(server, cache):
    data = payload(5 * transport._CHUNK)
    url = server.serve("/r.bin", data, reset_after=2 * transport._CHUNK + 500, reset_times=1)
    dest = hub.fetch(url, cache / "r.bin", checksum=sha256(data), retries=2)
    assert dest.read_bytes() == data
    records = server.records("/r.bin")
    assert len(records) == 2
    assert records[1].range is not None and records[1].range.startswith("bytes=")
    assert int(records[1].range[len("bytes="):-1]) > 0
    assert records[1].status == 206


def test_server_ignoring_range_restarts_from_zero(server, cache):
    data = payload(5 * transport._CHUNK + 3)
    url = server.serve("/i.bin", data, honour_range=False, truncate_after=3 * transport._CHUNK, truncate_times=1)
    dest = hub.fetch(url, cache / "i.bin", checksum=sha256(data), retries=2)
    assert dest.read_bytes() == data  # not the first part twice
    records = server.records("/i.bin")
    assert [r.status for r in records] == [200, 200]
    assert records[1].range is not None  # it asked to resume, got the whole file, started over


def test_http_500_then_success(server, cache):
    data = payload(5000)
    url = server.serve("/f.bin", data, fail_times=2)
    assert hub.fetch(url, cache / "f.bin", checksum=sha256(data), retries=3).read_bytes() == data
    assert [r.status for r in server.records("/f.bin")] == [500, 500, 200]


def test_without_checksum_length_is_still_checked(server, cache):
    data = payload(3 * transport._CHUNK)
    url = server.serve("/n.bin", data, truncate_after=transport._CHUNK + 10, truncate_times=1)
    assert hub.fetch(url, cache / "n.bin").read_bytes() == data
    assert server.count("/n.bin") == 2


def test_the_headers_of_every_answer_that_brings_bytes_are_seen(server, cache):
    """A download cut short and resumed: the first answer (200) and the resumed one (206)
    both pass their headers on (the server's file name is taken from the last of them)."""
    data = payload(3 * transport._CHUNK)
    url = server.serve("/h.bin", data, truncate_after=transport._CHUNK + 10, truncate_times=1,
                       headers={"Content-Disposition": 'attachment; filename="h.pth"'})
    seen: list = []
    tmp = cache / "h.bin.incomplete"
    transport._stream(url, cache / "h.bin", tmp, pin=None, expected_size=len(data), timeout=10.0, retries=2,
                      progress=False, on_headers=lambda headers: seen.append(headers["Content-Disposition"]))
    assert tmp.read_bytes() == data
    assert [r.status for r in server.records("/h.bin")] == [200, 206]
    assert seen == ['attachment; filename="h.pth"'] * 2


def test_body_ending_early_without_an_error_is_resumed(server, cache, monkeypatch):
    # urllib3 1.x does not enforce Content-Length: a cut body just ends; the length check catches it
    import requests

    real = requests.Response.iter_content
    calls = []

    def first_chunk_only(self, *args, **kwargs):
        calls.append(1)
        chunks = real(self, *args, **kwargs)
        if len(calls) == 1:
            yield next(chunks)
            self.close()
            return
        yield from chunks

    monkeypatch.setattr(requests.Response, "iter_content", first_chunk_only)
    data = payload(3 * transport._CHUNK)
    url = server.serve("/q.bin", data)
    assert hub.fetch(url, cache / "q.bin", checksum=sha256(data), retries=0).read_bytes() == data
    assert [r.range for r in server.records("/q.bin")] == [None, f"bytes={transport._CHUNK}-"]


# --------------------------------------------------------------------------- fetch: failures


def test_persistent_500_gives_up_after_retries(server, cache):
    url = server.serve("/e.bin", b"x", fail_times=100, fail_status=503)
    with pytest.raises(DownloadError, match="after 3 tries") as info:
        hub.fetch(url, cache / "e.bin", retries=2)
    assert url in str(info.value) and "503" in str(info.value)
    assert server.count("/e.bin") == 3
    assert leftovers(cache) == []


def test_404_is_not_retried(server, cache):
    url = server.serve("/missing.bin", b"", status=404)
    with pytest.raises(DownloadError) as info:
        hub.fetch(url, cache / "missing.bin", retries=5)
    message = str(info.value)
    assert "404" in message and repr(url) in message and str(cache / "missing.bin") in message
    assert not isinstance(info.value, ChecksumError)
    assert isinstance(info.value, OSError) and isinstance(info.value, PannsError)
    assert server.count("/missing.bin") == 1
    assert leftovers(cache) == []


@pytest.mark.parametrize("algorithm", ["sha256", "md5"])
def test_wrong_bytes_raise_checksum_error_and_leave_nothing(server, cache, algorithm):
    good, bad = payload(100_000, seed=1), payload(100_000, seed=2)
    url = server.serve("/w.bin", bad)
    expected = hashlib.new(algorithm, good).hexdigest()
    with pytest.raises(ChecksumError) as info:
        hub.fetch(url, cache / "w.bin", checksum=f"{algorithm}:{expected}")
    assert str(info.value) == (
        f"{algorithm} checksum mismatch for {url!r}: expected {expected}, got "
        f"{hashlib.new(algorithm, bad).hexdigest()}. The downloaded file was deleted. Likely causes: the "
        "download was truncated or corrupted, the file changed upstream, or a mirror "
        "(PANNS_INFER_MIRROR) serves a different file. Try again; if it persists, report it.")
    assert leftovers(cache) == []
    assert server.count("/w.bin") == 1  # a hash mismatch is not retried


def test_announced_size_mismatch_is_a_checksum_error(server, cache):
    url = server.serve("/s.bin", payload(1000))
    with pytest.raises(ChecksumError, match="999 bytes"):
        hub.fetch(url, cache / "s.bin", expected_size=999)
    assert leftovers(cache) == []


def test_slow_server_times_out_after_retries(server, cache):
    url = server.serve("/slow.bin", payload(50_000), delay=1.0)
    start = time.monotonic()
    with pytest.raises(DownloadError, match="after 2 tries"):
        hub.fetch(url, cache / "slow.bin", timeout=0.2, retries=1)
    assert time.monotonic() - start < 5
    assert server.count("/slow.bin") == 2
    assert leftovers(cache) == []


def test_failed_verify_leaves_nothing(server, cache):
    url = server.serve("/v.bin", b"not what we want")

    def verify(path: Path) -> None:
        assert path.name.endswith(".incomplete")  # checked before it gets its final name
        raise CheckpointError("bad")

    with pytest.raises(CheckpointError, match="failed its check and was deleted"):
        hub.fetch(url, cache / "v.bin", verify=verify)
    assert leftovers(cache) == []


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
def test_4xx_fails_at_once_with_the_common_advice(server, cache, status):
    url = server.serve(f"/s{status}.bin", b"", status=status)
    with pytest.raises(DownloadError, match="Not retried") as info:
        hub.fetch(url, cache / "s.bin", retries=5)
    assert "copy it to" in str(info.value) and str(status) in str(info.value)
    assert server.count(f"/s{status}.bin") == 1


def _count_gets(monkeypatch) -> list:
    import requests

    calls: list = []
    real = requests.Session.get

    def get(self, url, **kwargs):
        calls.append(url)
        return real(self, url, **kwargs)

    monkeypatch.setattr(requests.Session, "get", get)
    return calls


def test_a_host_name_that_does_not_resolve_fails_at_once(cache, monkeypatch):
    import socket

    import requests
    from urllib3.exceptions import MaxRetryError

    calls: list = []
    failure = socket.gaierror(-2, "Name or service not known")

    def unresolvable(self, url, **kwargs):  # what requests raises when getaddrinfo fails
        calls.append(url)
        try:
            from urllib3.exceptions import NameResolutionError  # urllib3 2
            cause: Exception = NameResolutionError("mirror.example", None, failure)
        except ImportError:  # urllib3 1.x (older requests): the resolver's error is the cause
            from urllib3.exceptions import NewConnectionError
            cause = NewConnectionError(None, "Failed to establish a new connection: [Errno -2] Name or service "
                                             "not known")
            cause.__cause__ = failure
        raise requests.ConnectionError(MaxRetryError(None, url, cause))

    monkeypatch.setattr(requests.Session, "get", unresolvable)
    started = time.monotonic()
    with pytest.raises(DownloadError, match="could not be resolved") as info:
        hub.fetch("https://mirror.example/x.bin", cache / "x.bin", retries=5)
    assert calls == ["https://mirror.example/x.bin"] and time.monotonic() - started < 2
    assert "'mirror.example'" in str(info.value) and "copy it to" in str(info.value)
    assert "Not retried" in str(info.value)


def test_a_real_invalid_host_is_tried_once(cache, monkeypatch):
    calls = _count_gets(monkeypatch)
    with pytest.raises(DownloadError, match="could not be resolved"):
        hub.fetch("http://nonexistent.invalid/x.bin", cache / "x.bin", retries=5, timeout=5)
    assert len(calls) == 1


def test_connection_refused_is_still_retried(cache, monkeypatch):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    calls = _count_gets(monkeypatch)
    with pytest.raises(DownloadError, match="after 3 tries"):
        hub.fetch(f"http://127.0.0.1:{port}/x.bin", cache / "x.bin", retries=2, timeout=5)
    assert len(calls) == 3


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_an_untrusted_tls_certificate_fails_at_once(cache, tmp_path, monkeypatch):
    import http.server
    import ssl
    import threading

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    calls = _count_gets(monkeypatch)
    try:
        with pytest.raises(DownloadError, match="TLS/SSL") as info:
            hub.fetch(f"https://127.0.0.1:{httpd.server_address[1]}/x.bin", cache / "x.bin", retries=5, timeout=5)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert len(calls) == 1 and "Not retried" in str(info.value) and "copy it to" in str(info.value)


# --------------------------------------------------------------------------- the cache


def test_corrupted_cached_file_is_fetched_again(server, cache, caplog):
    data = payload(4000)
    url = server.serve("/c.bin", data)
    dest = cache / "c.bin"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data[:-1] + b"\0")
    with caplog.at_level(logging.WARNING, logger="panns_infer"):
        hub.fetch(url, dest, checksum=sha256(data))
    assert dest.read_bytes() == data
    assert server.count("/c.bin") == 1
    assert any("failed verification" in r.getMessage() for r in caplog.records)
    assert leftovers(cache) == ["c.bin"]  # the refused copy goes once a verified one is in place


def test_cached_file_of_wrong_size_is_fetched_again(server, cache):
    data = payload(4000)
    url = server.serve("/z.bin", data)
    dest = cache / "z.bin"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data[:100])
    hub.fetch(url, dest, expected_size=len(data))
    assert dest.read_bytes() == data


def test_good_cached_file_survives_a_failing_server(server, cache):
    data = payload(4000)
    url = server.serve("/g.bin", data)
    dest = hub.fetch(url, cache / "g.bin", checksum=sha256(data))
    server.configure("/g.bin", status=500)
    assert hub.fetch(url, dest, checksum=sha256(data)).read_bytes() == data
    assert server.count("/g.bin") == 1


def test_offline_uses_cached_file_without_requests(server, cache, monkeypatch):
    data = payload(4000)
    url = server.serve("/o.bin", data)
    dest = cache / "o.bin"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    monkeypatch.setenv("PANNS_INFER_OFFLINE", "1")
    assert hub.fetch(url, dest, checksum=sha256(data)) == dest
    assert server.requests == []


def test_offline_without_cached_file_raises(server, cache, monkeypatch):
    entry = registry.Checkpoint(name="T", filename="T_mAP=0.100.pth", arch="Cnn6", mAP=0.1,
                                checksum=sha256(b"x"))
    monkeypatch.setenv("PANNS_INFER_MIRROR", server.url("/mirror"))
    monkeypatch.setenv("PANNS_INFER_OFFLINE", "yes")
    with pytest.raises(OfflineError) as info:
        hub.download(entry)
    message = str(info.value)
    assert str(hub.checkpoint_path(entry)) in message
    assert "panns_infer.download('T')" in message and "panns-tag --download T" in message
    assert "PANNS_INFER_OFFLINE" in message
    assert isinstance(info.value, ConnectionError)
    with pytest.raises(OfflineError, match="offline=False"):
        hub.download(entry, offline=True)
    monkeypatch.delenv("PANNS_INFER_OFFLINE")
    with pytest.raises(OfflineError):
        hub.fetch(server.url("/o.bin"), cache / "o.bin", offline=True)
    assert server.requests == []
    assert not (cache / "checkpoints").exists()


def test_offline_keeps_a_refused_cached_file_and_says_where_and_why(server, cache):
    dest = cache / "b.bin"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(b"garbage")
    aside = cache / "b.bin.refused"
    for _ in range(2):  # the first call sets it aside, the next finds it there
        with pytest.raises(OfflineError) as info:
            hub.fetch(server.url("/b.bin"), dest, checksum=sha256(b"good"), offline=True)
        message = str(info.value)
        assert str(aside) in message and "its sha256 is" in message and str(dest) in message
    assert server.requests == [] and not dest.exists()
    assert aside.read_bytes() == b"garbage"


def test_a_failing_server_never_costs_the_refused_cached_file(server, cache):
    data = payload(4000)
    url = server.serve("/f.bin", data, status=503)
    dest = cache / "f.bin"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data[:3000])
    with pytest.raises(DownloadError) as info:
        hub.fetch(url, dest, checksum=sha256(data), retries=1)
    assert str(cache / "f.bin.refused") in str(info.value) and "its sha256 is" in str(info.value)
    assert (cache / "f.bin.refused").read_bytes() == data[:3000] and not dest.exists()
    server.serve("/f.bin", payload(4000, seed=1))  # a server with the wrong file
    with pytest.raises(ChecksumError, match="set aside"):
        hub.fetch(url, dest, checksum=sha256(data))
    assert (cache / "f.bin.refused").read_bytes() == data[:3000]
    server.serve("/f.bin", data)
    assert hub.fetch(url, dest, checksum=sha256(data)).read_bytes() == data
    assert leftovers(cache) == ["f.bin"]


def test_a_refused_file_that_passes_its_check_later_is_taken_back(server, cache):
    data = payload(500)
    aside = cache / "r.bin.refused"
    aside.parent.mkdir(parents=True, exist_ok=True)
    aside.write_bytes(data)  # e.g. refused by a check that has since been fixed
    url = server.serve("/r.bin", b"", status=404)
    assert hub.fetch(url, cache / "r.bin", checksum=sha256(data)).read_bytes() == data
    assert server.requests == [] and leftovers(cache) == ["r.bin"]


def test_stale_incomplete_files_are_removed(server, cache):
    data = payload(100)
    url = server.serve("/st.bin", data)
    cache.mkdir(parents=True, exist_ok=True)
    stale, fresh = cache / "st.bin.aaaa.incomplete", cache / "st.bin.bbbb.incomplete"
    stale.write_bytes(b"old")
    fresh.write_bytes(b"new")  # may belong to a live process
    two_days_ago = time.time() - 2 * 86400
    os.utime(stale, (two_days_ago, two_days_ago))
    hub.fetch(url, cache / "st.bin")
    assert not stale.exists() and fresh.exists()


# --------------------------------------------------------------------------- registry entries


def test_download_pinned_entry_and_mirror(server, cache, monkeypatch):
    data = payload(30_000)
    entry = registry.Checkpoint(name="T", filename="T_mAP=0.100.pth", arch="Cnn6", mAP=0.1,
                                checksum=sha256(data), size=len(data))
    server.serve("/mirror/T_mAP%3D0.100.pth", data)
    monkeypatch.setenv("PANNS_INFER_MIRROR", server.url("/mirror") + "/")
    assert hub.checkpoint_url(entry) == server.url("/mirror/T_mAP%3D0.100.pth")
    path = hub.download(entry, progress=False)
    assert path == cache / "checkpoints" / "T_mAP=0.100.pth"
    assert path.read_bytes() == data
    assert [r.path for r in server.requests] == ["/mirror/T_mAP%3D0.100.pth"]


def test_mirror_with_wrong_file_is_rejected(server, cache, monkeypatch):
    entry = registry.Checkpoint(name="T", filename="T.pth", arch="Cnn6", mAP=0.0,
                                checksum=sha256(payload(500, seed=1)))
    server.serve("/mirror/T.pth", payload(500, seed=2))
    monkeypatch.setenv("PANNS_INFER_MIRROR", server.url("/mirror"))
    with pytest.raises(ChecksumError):
        hub.download(entry)
    assert leftovers(cache / "checkpoints") == []


def test_mirror_missing_file_says_so(server, cache, monkeypatch):
    entry = registry.Checkpoint(name="T", filename="T.pth", arch="Cnn6", mAP=0.0, checksum=sha256(b"x"))
    monkeypatch.setenv("PANNS_INFER_MIRROR", server.url("/mirror"))
    with pytest.raises(DownloadError, match="PANNS_INFER_MIRROR"):
        hub.download(entry)
    assert server.count("/mirror/T.pth") == 1


def test_mirror_must_be_http(monkeypatch):
    monkeypatch.setenv("PANNS_INFER_MIRROR", "/some/folder")
    with pytest.raises(ValueError, match="PANNS_INFER_MIRROR"):
        hub.checkpoint_url("Cnn6")


def test_registry_names_resolve_to_zenodo_without_mirror():
    assert hub.checkpoint_url("Cnn14") == registry.get_checkpoint("Cnn14").url
    assert hub.checkpoint_path("cnn14_map=0.431.pth").name == "Cnn14_mAP=0.431.pth"
    with pytest.raises(TypeError):
        hub.download(3)  # type: ignore[arg-type]


def test_unpinned_entry_is_verified_as_its_architecture(server, cache, monkeypatch):
    calls = []

    def fake_verify(path: Path, arch: str) -> None:
        calls.append((path.name, arch))
        if path.read_bytes() != b"good weights":
            raise CheckpointError(f"{path} is not a {arch} checkpoint")

    monkeypatch.setattr(hub, "_verify_unpinned", fake_verify)
    entry = registry.Checkpoint(name="U", filename="U.pth", arch="Cnn10", mAP=0.0)
    monkeypatch.setenv("PANNS_INFER_MIRROR", server.url("/m"))
    server.serve("/m/U.pth", b"bad weights")
    with pytest.raises(CheckpointError):
        hub.download(entry)
    assert leftovers(cache / "checkpoints") == []
    assert calls and calls[0][1] == "Cnn10" and calls[0][0].endswith(".incomplete")

    server.serve("/m/U.pth", b"good weights")
    assert hub.download(entry).read_bytes() == b"good weights"
    # a cached unpinned file is checked again before use, and a bad one replaced
    hub.checkpoint_path(entry).write_bytes(b"tampered")
    assert hub.download(entry).read_bytes() == b"good weights"
    assert server.count("/m/U.pth") == 3


def test_download_url_caches_by_url(server, cache):
    data = payload(2000)
    url = server.serve("/models/my%20net.pth", data) + "?token=1"
    path = hub.download_url(url, sha256=hashlib.sha256(data).hexdigest())
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    assert path == cache / "urls" / digest / "my net.pth"
    assert path.read_bytes() == data
    assert hub.download_url(url, sha256="sha256:" + hashlib.sha256(data).hexdigest()) == path
    assert server.count("/models/my%20net.pth") == 1
    with pytest.raises(ChecksumError):
        hub.download_url(server.url("/models/my%20net.pth"), sha256="0" * 64)
    with pytest.raises(ValueError):
        hub.download_url("ftp://example.org/x.pth")
    with pytest.raises(ValueError):
        hub.download_url(url, sha256="md5:" + "0" * 32)


# --------------------------------------------------------------------------- labels


def test_the_packaged_label_list_is_the_pinned_one_and_needs_no_network(cache, monkeypatch):
    monkeypatch.setattr(registry, "LABELS_URL", "https://nonexistent.invalid/labels.csv")
    path = labels.packaged_labels_file()
    assert path is not None and path.parent.name == "data" and path.stat().st_size == 14675
    assert hashlib.sha256(path.read_bytes()).hexdigest() == labels.AUDIOSET_LABELS_SHA256
    assert hub.labels_file(offline=True) == path
    names = labels.audioset_labels(offline=True)
    assert len(names) == 527 and names[0] == "Speech"
    assert not (cache / "labels").exists()


def test_label_and_checkpoint_urls_are_https():
    assert registry.LABELS_URL.startswith("https://")
    assert all(entry.url.startswith("https://") for entry in registry.CHECKPOINTS.values())


@pytest.fixture
def damaged_package(monkeypatch):
    """As if the packaged label list were missing or altered."""
    monkeypatch.setattr(labels, "packaged_labels_file", lambda: None)


@pytest.mark.skipif(not LABELS_CSV.is_file(), reason=f"{LABELS_CSV} is absent (../shared not checked out)")
def test_a_damaged_package_fetches_the_pinned_labels_once(server, cache, monkeypatch, damaged_package):
    good = LABELS_CSV.read_bytes()
    monkeypatch.setattr(registry, "LABELS_URL", server.serve("/labels.csv", good))
    path = hub.labels_file()
    assert path == cache / "labels" / "class_labels_indices.csv"
    assert labels.audioset_labels()[:1] == ["Speech"]
    assert hub.labels_file() == path and server.count("/labels.csv") == 1


@pytest.mark.skipif(not LABELS_CSV.is_file(), reason=f"{LABELS_CSV} is absent (../shared not checked out)")
def test_labels_that_differ_from_the_pin_are_refused_from_a_mirror_too(server, cache, monkeypatch, damaged_package):
    good = LABELS_CSV.read_bytes()
    relabelled = good.replace(b'"Speech"', b'"Silence"', 1)  # well-formed, but not the pinned list
    assert relabelled != good
    monkeypatch.setattr(registry, "LABELS_URL", server.serve("/labels.csv", relabelled))
    with pytest.raises(ChecksumError, match="sha256"):
        hub.labels_file()
    server.serve("/mirror/class_labels_indices.csv", relabelled)
    monkeypatch.setenv("PANNS_INFER_MIRROR", server.url("/mirror"))
    with pytest.raises(ChecksumError, match="sha256"):
        hub.labels_file()
    assert leftovers(cache / "labels") == []
    with pytest.raises(LabelsError, match="missing or altered"):
        labels.audioset_labels(offline=True)


# --------------------------------------------------------------------------- progress


class _FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("progress, tty, shown", [(None, True, True), (False, True, False),
                                                  (None, False, False), (True, False, False)])
def test_progress_bar_only_on_a_terminal(server, cache, monkeypatch, progress, tty, shown):
    stream = _FakeTTY() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    url = server.serve("/p.bin", payload(3 * transport._CHUNK))
    hub.fetch(url, cache / "p.bin", progress=progress)
    assert ("100%" in stream.getvalue()) is shown


# --------------------------------------------------------------------------- processes


CHILD = textwrap.dedent("""
    import sys
    from panns_infer import hub, transport
    transport._BACKOFF_BASE = 0.001
    url, dest, checksum = sys.argv[1:4]
    print("ready", flush=True)
    sys.stdin.readline()
    print(hub.fetch(url, dest, checksum=checksum, progress=False), flush=True)
""")


def _child(url: str, dest: Path, checksum: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-c", CHILD, url, str(dest), checksum], cwd=REPO, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_ready(proc: subprocess.Popen) -> None:
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        pytest.fail(f"child did not start: {line!r} {proc.stderr.read()}")


def test_killed_download_leaves_no_final_file_and_keeps_the_refused_one(server, cache):
    data = payload(400_000)
    url = server.serve("/k.bin", data, delay=0.05)  # 8 kB per 50 ms: about 2.5 s in all
    dest = cache / "k.bin"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data[:1000])  # a cached copy that fails verification
    proc = _child(url, dest, sha256(data))
    try:
        _wait_ready(proc)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 15
        partial: list[Path] = []
        while time.monotonic() < deadline:
            partial = [p for p in cache.glob("k.bin.*.incomplete") if p.stat().st_size > 0]
            if partial:
                break
            time.sleep(0.02)
        assert partial, "the child never started writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not dest.exists()
    assert partial[0].exists()  # what a dead process leaves; never under the final name
    assert (cache / "k.bin.refused").read_bytes() == data[:1000]  # kept until a verified one is in place

    # the killed process's lock is gone: a clean retry succeeds (and removes the stale leftover)
    old = time.time() - 2 * 86400
    os.utime(partial[0], (old, old))
    server.configure("/k.bin", delay=0.0)
    assert hub.fetch(url, dest, checksum=sha256(data), timeout=5).read_bytes() == data
    assert leftovers(cache) == ["k.bin"]


def _fetch_in_child(url: str, dest: str, checksum: str, go, results) -> None:
    """Body of a forked process: wait for the start signal, fetch, report the path or the error."""
    go.wait(30)
    try:
        results.put(("ok", str(hub.fetch(url, dest, checksum=checksum, progress=False))))
    except BaseException as exc:  # report, do not hang the parent
        results.put(("error", repr(exc)))


@pytest.mark.skipif(sys.platform == "win32", reason="uses fork")
@pytest.mark.filterwarnings("ignore:.*multi-threaded.*fork:DeprecationWarning")
def test_four_processes_download_once(server, cache):
    # forked processes (hub already imported: no 2 s interpreter start each), each with its own
    # lock handle, all released at the same moment against a server slow enough to overlap them
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    data = payload(256_000)
    url = server.serve("/p4.bin", data, delay=0.03, chunk_size=16_384)  # about 0.5 s
    dest = cache / "shared" / "p4.bin"
    go, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_fetch_in_child, args=(url, str(dest), sha256(data), go, results))
             for _ in range(4)]
    try:
        for proc in procs:
            proc.start()
        go.set()
        outcomes = [results.get(timeout=60) for _ in procs]
        for proc in procs:
            proc.join(timeout=10)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
    assert outcomes == [("ok", str(dest))] * 4
    assert all(proc.exitcode == 0 for proc in procs)
    assert dest.read_bytes() == data
    assert server.count("/p4.bin") == 1  # one full download, the other three used its result
    assert [r.status for r in server.records("/p4.bin")] == [200]
    assert leftovers(dest.parent) == ["p4.bin"]


# --------------------------------------------------------------------------- a real checkpoint


@pytest.fixture(scope="module")
def cnn6_bytes(tmp_path_factory) -> bytes:
    if not (SHARED_FIXTURES / "make_checkpoint.py").is_file():
        pytest.skip(f"{SHARED_FIXTURES} is absent: the shared fixtures are not checked out next to the repo")
    sys.path.insert(0, str(SHARED_FIXTURES))
    try:
        import make_checkpoint
    finally:
        sys.path.remove(str(SHARED_FIXTURES))
    _, state = make_checkpoint.build_state_dict("Cnn6")
    path = tmp_path_factory.mktemp("ckpt") / "Cnn6.pth"
    make_checkpoint.save(state, path, "zenodo")
    return path.read_bytes()


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "unpinned"])
def test_real_fixture_checkpoint(server, cache, monkeypatch, cnn6_bytes, pinned):
    if not pinned:
        pytest.importorskip("panns_infer.checkpoint", reason="panns_infer.checkpoint is not written yet")
    entry = registry.Checkpoint(name="Cnn6", filename="Cnn6_mAP=0.343.pth", arch="Cnn6", mAP=0.343,
                                checksum=sha256(cnn6_bytes) if pinned else None,
                                size=len(cnn6_bytes) if pinned else None)
    server.serve("/zenodo/Cnn6_mAP%3D0.343.pth", cnn6_bytes, reset_after=3 * transport._CHUNK, chunk_size=65536)
    monkeypatch.setenv("PANNS_INFER_MIRROR", server.url("/zenodo"))
    path = hub.download(entry, progress=False)
    assert path.read_bytes() == cnn6_bytes
    assert server.records("/zenodo/Cnn6_mAP%3D0.343.pth")[-1].status == 206  # resumed
    if not pinned:  # the real structural check rejects a file that is not a Cnn6 checkpoint
        server.serve("/zenodo/Cnn10_mAP%3D0.380.pth", cnn6_bytes)
        wrong = registry.Checkpoint(name="Cnn10", filename="Cnn10_mAP=0.380.pth", arch="Cnn10", mAP=0.38)
        with pytest.raises(CheckpointError):
            hub.download(wrong, progress=False)
        assert leftovers(cache / "checkpoints") == ["Cnn6_mAP=0.343.pth"]


# --------------------------------------------------------------------------- names vs paths


def test_registry_names_win_over_a_folder_or_file_of_that_name(server, cache, monkeypatch, tmp_path):
    data = b"released weights"
    entry = registry.Checkpoint(name="Cnn6", filename="Cnn6_mAP=0.343.pth", arch="Cnn6", mAP=0.343,
                                checksum=sha256(data), size=len(data))
    monkeypatch.setitem(registry.CHECKPOINTS, "Cnn6", entry)
    monkeypatch.setattr(registry, "_TABLE", tuple(entry if c.name == "Cnn6" else c for c in registry._TABLE))
    server.serve("/m/Cnn6_mAP%3D0.343.pth", data)
    monkeypatch.setenv("PANNS_INFER_MIRROR", server.url("/m"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Cnn6").mkdir()
    (tmp_path / "cnn10").write_bytes(b"a local file named like a registry name")
    for name in ("Cnn6", "cnn6", "CNN6"):
        path, found = hub.resolve_checkpoint(name, progress=False)
        assert found == entry and path == hub.checkpoint_path(entry)
    assert hub.resolve_checkpoint("./cnn10") == (Path("./cnn10"), None)  # a path: the local file
    assert hub.resolve_checkpoint(Path("cnn10")) == (Path("cnn10"), None)
    local = tmp_path / "Cnn6_mAP=0.343.pth"                                # a dot: a path first
    local.write_bytes(b"mine")
    assert hub.resolve_checkpoint("Cnn6_mAP=0.343.pth") == (Path("Cnn6_mAP=0.343.pth"), None)
    assert hub.resolve_checkpoint("./Cnn6") == (Path("./Cnn6"), None)     # the folder (refused when loaded)


# --------------------------------------------------------------------------- exact messages and limits


class _Clock:
    """A stand-in for time.monotonic that tests move by hand."""

    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("n, text", [(0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (1500, "1.5 kB"),
                                     (999_499, "999.5 kB"), (2_000_000, "2.0 MB"), (2_500_000_000, "2.5 GB"),
                                     (5_000_000_000_000, "5000.0 GB")])
def test_byte_counts_in_the_progress_bar(n, text):
    assert transport._format_bytes(n) == text


def test_progress_bar_text_rate_and_throttle(monkeypatch):
    stream = _FakeTTY()
    monkeypatch.setattr(sys, "stderr", stream)
    clock = _Clock(0.0)
    monkeypatch.setattr(transport.time, "monotonic", clock)
    bar = transport._Progress("a.bin", None)
    clock.now = 0.1  # exactly 0.1 s after the last draw (none yet): drawn
    bar.update(500, 1000)
    assert stream.getvalue() == "\ra.bin  50% |##########          | 500 B/1.0 kB 5.0 kB/s\x1b[K"
    clock.now = 0.15
    bar.update(600, 1000)  # 0.05 s after the last draw: skipped
    assert stream.getvalue().count("\r") == 1
    bar.update(600, 1000, force=True)
    assert stream.getvalue().endswith("\ra.bin  60% |############        | 600 B/1.0 kB 4.0 kB/s\x1b[K")
    clock.now = 0.5
    bar.update(1500, 1000)  # more than announced: capped at 100 %
    assert stream.getvalue().endswith("\ra.bin 100% |####################| 1.5 kB/1.0 kB 3.0 kB/s\x1b[K")
    clock.now = 1.0
    bar.update(2000, None)  # unknown size: bytes and rate only
    assert stream.getvalue().endswith("\ra.bin 2.0 kB 2.0 kB/s\x1b[K")
    bar.close()
    assert stream.getvalue().endswith("\x1b[K\n")
    bar.close()  # a second close adds nothing
    assert stream.getvalue().count("\n") == 1


def test_progress_rate_counts_from_the_start_of_the_download(monkeypatch):
    stream = _FakeTTY()
    monkeypatch.setattr(sys, "stderr", stream)
    clock = _Clock(100.0)
    monkeypatch.setattr(transport.time, "monotonic", clock)
    bar = transport._Progress("b.bin", None)
    clock.now = 102.0
    bar.update(4000, None)
    assert stream.getvalue() == "\rb.bin 4.0 kB 2.0 kB/s\x1b[K"
    clock.now = 102.05
    bar.update(4100, None)
    assert stream.getvalue().count("\r") == 1  # throttled: 0.05 s after the last draw


@pytest.mark.parametrize("label, shown", [("x" * 40, "x" * 40), ("y" * 41, "y" * 37 + "...")])
def test_progress_label_is_cut_to_40_characters(monkeypatch, label, shown):
    stream = _FakeTTY()
    monkeypatch.setattr(sys, "stderr", stream)
    bar = transport._Progress(label, None)
    bar.update(10, None, force=True)
    assert stream.getvalue().startswith("\r" + shown + " 10 B ")


def test_progress_without_a_stream_that_has_isatty_draws_nothing(monkeypatch):
    class Bare:
        def __init__(self):
            self.text = ""

        def write(self, text):
            self.text += text

        def flush(self):
            pass

    stream = Bare()
    monkeypatch.setattr(sys, "stderr", stream)
    bar = transport._Progress("c.bin", None)
    bar.update(10, 20, force=True)
    bar.close()
    assert stream.text == ""
    tty = _FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    transport._Progress("c.bin", None).close()  # nothing drawn: nothing to end
    assert tty.getvalue() == ""


@pytest.mark.parametrize("value, parsed", [
    ("bytes 10-99/100", (10, 100)), ("bytes */100", (None, 100)), ("bytes 0-9/*", (0, None)),
    ("bytes 10-99", (10, None)), ("items 10-99/100", (None, 100)), ("", (None, None)),
    ("bytes 10-99/100/5", (None, None)), ("bytes  10-99/100", (10, 100)), ("bytes x-9/100", (None, None)),
])
def test_content_range_parsing(value, parsed):
    assert transport._content_range(value) == parsed


@pytest.mark.parametrize("header, wait", [("0", 0.0), ("2.5", 2.5), ("-5", 0.0), ("600", 60.0),
                                          ("Wed, 21 Oct 2026 07:28:00 GMT", None), (None, None)])
def test_retry_after_is_read_and_bounded(header, wait):
    import requests

    response = requests.Response()
    if header is not None:
        response.headers["Retry-After"] = header
    assert transport._retry_after(response) == wait


def _record_sleeps(monkeypatch) -> list:
    sleeps: list = []
    monkeypatch.setattr(transport.time, "sleep", sleeps.append)
    return sleeps


@pytest.mark.parametrize("status", [408, 429, 500, 503])
def test_retryable_statuses_wait_as_retry_after_says(server, cache, monkeypatch, status):
    sleeps = _record_sleeps(monkeypatch)
    data = payload(3000)
    url = server.serve(f"/ra{status}.bin", data, fail_times=2, fail_status=status, headers={"Retry-After": "7"})
    assert hub.fetch(url, cache / "ra.bin", retries=2).read_bytes() == data
    assert [r.status for r in server.records(f"/ra{status}.bin")] == [status, status, 200]
    assert sleeps == [7.0, 7.0]  # the server's Retry-After, not the backoff


def test_backoff_doubles_and_retry_after_overrides_it(server, cache, monkeypatch):
    import requests

    sleeps = _record_sleeps(monkeypatch)
    monkeypatch.setattr(transport, "_BACKOFF_BASE", 1.0)
    monkeypatch.setattr(transport.random, "uniform", lambda low, high: high)
    answers: list = []

    def fake_open(session, url, dest, start, timeout):
        answers.append(start)
        if len(answers) == 1:
            raise transport._Retry("HTTP 503 Service Unavailable", wait=7.0)
        raise transport._Retry("HTTP 502 Bad Gateway")

    monkeypatch.setattr(transport, "_open_response", fake_open)
    with pytest.raises(DownloadError) as info:
        hub.fetch("http://127.0.0.1:9/x.bin", cache / "x.bin", retries=7)
    assert sleeps == [7.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert len(answers) == 8
    message = str(info.value)
    assert message == (
        "could not download 'http://127.0.0.1:9/x.bin' after 8 tries without progress; last error: HTTP 502 "
        "Bad Gateway. Check the network connection (and proxy settings) and try again later, or get the file "
        f"by other means and copy it to {str(cache / 'x.bin')!r}.")
    del requests


def test_the_first_retry_waits_the_base_backoff_times_a_random_factor(server, cache, monkeypatch):
    """Without Retry-After: base, 2 x base, 4 x base ..., each scaled by a factor drawn from
    [0.5, 1] (so that many clients do not retry in step)."""
    sleeps = _record_sleeps(monkeypatch)
    monkeypatch.setattr(transport, "_BACKOFF_BASE", 1.0)
    draws: list = []

    def uniform(low, high):
        draws.append((low, high))
        return 0.75

    monkeypatch.setattr(transport.random, "uniform", uniform)
    data = payload(2000)
    url = server.serve("/b.bin", data, fail_times=3, fail_status=503)
    assert hub.fetch(url, cache / "b.bin", retries=3).read_bytes() == data
    assert sleeps == [0.75, 1.5, 3.0]
    assert draws == [(0.5, 1.0)] * 3


def _status_message(status: int, reason: str, url: str = "https://h.example/f.bin",
                    dest: Path = Path("/c/f.bin")) -> str:
    import requests

    response = requests.Response()
    response.status_code, response.reason = status, reason
    return str(transport._status_error(url, dest, response))


def test_a_status_error_message_in_full():
    assert _status_message(404, "Not Found") == (
        "downloading 'https://h.example/f.bin' failed: HTTP 404 Not Found. The file is not at this address. "
        "Check the URL (or the registry entry) for a typo or a moved file. You can also get the file by other "
        "means and copy it to '/c/f.bin'. (Not retried: this error does not go away by itself.)")
    assert "failed: HTTP 499. The server rejected the request. You can" in _status_message(499, "")


@pytest.mark.parametrize("status, hint", [
    (404, "The file is not at this address. Check the URL"), (410, "The file is not at this address. Check the URL"),
    (401, "The server refused access; the file may have been made private or moved."),
    (403, "The server refused access; the file may have been made private or moved."),
    (400, "The server rejected the request."), (402, "The server rejected the request."),
    (411, "The server rejected the request."),
])
def test_each_refusing_status_gets_its_advice(status, hint):
    assert f". {hint}" in _status_message(status, "Reason")


def test_a_file_missing_from_the_mirror_names_the_mirror_and_the_file(monkeypatch):
    monkeypatch.setenv("PANNS_INFER_MIRROR", "https://m.example/panns/")
    message = _status_message(404, "Not Found", "https://m.example/panns/f%20g.bin", Path("/c/f g.bin"))
    assert ("failed: HTTP 404 Not Found. The file is not at this address. The mirror "
            "PANNS_INFER_MIRROR='https://m.example/panns' does not have it: copy 'f g.bin' there, or unset "
            "PANNS_INFER_MIRROR to download from the original source. You can also") in message
    other = _status_message(410, "Gone", "https://h.example/f.bin")  # not under the mirror
    assert "The file is not at this address. Check the URL" in other


def test_mirror_accepts_http_and_https_and_keeps_the_path(monkeypatch):
    for base, url in [("https://files.example.org/BOX/", "https://files.example.org/BOX/Cnn6_mAP%3D0.343.pth"),
                      ("http://h.example/a//", "http://h.example/a/Cnn6_mAP%3D0.343.pth")]:
        monkeypatch.setenv("PANNS_INFER_MIRROR", base)
        assert hub.checkpoint_url("Cnn6") == url
    monkeypatch.setenv("PANNS_INFER_MIRROR", "ftp://h.example/a")
    with pytest.raises(ValueError) as info:
        hub.checkpoint_url("Cnn6")
    assert str(info.value) == (
        "PANNS_INFER_MIRROR='ftp://h.example/a' is not an http(s) URL. Set it to the base URL of a server "
        "that holds the checkpoint files (e.g. 'https://files.example.org/panns'), or unset it.")


def test_name_resolution_failure_is_found_anywhere_in_the_chain():
    import socket
    import threading

    failure = socket.gaierror(-2, "Name or service not known")
    inner = OSError("wrapped")
    inner.__cause__ = failure
    top = OSError(inner, ValueError("a later argument, searched first"))
    assert transport._name_not_resolved(top) == str(failure)

    a, b = OSError("a"), OSError("b")  # a chain that loops back on itself
    a.__cause__, b.__context__ = b, a
    found: list = []
    thread = threading.Thread(target=lambda: found.append(transport._name_not_resolved(a)), daemon=True)
    thread.start()
    thread.join(timeout=5)
    assert found == [None]


def test_the_resolver_message_is_in_the_error(cache, monkeypatch):
    import socket

    import requests

    def unresolvable(self, url, **kwargs):
        raise requests.ConnectionError(OSError("no connection"), socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(requests.Session, "get", unresolvable)
    with pytest.raises(DownloadError) as info:
        hub.fetch("https://mirror.example/x.bin", cache / "x.bin", retries=5)
    assert "the host name 'mirror.example' could not be resolved ([Errno -2] Name or service not known)" in str(
        info.value)


def test_a_cached_file_of_the_published_size_is_used_without_network(server, cache):
    data = payload(4000)
    url = server.serve("/sz.bin", data)
    dest = hub.fetch(url, cache / "sz.bin", expected_size=len(data))
    assert hub.fetch(url, dest, expected_size=len(data), offline=True) == dest
    assert server.count("/sz.bin") == 1
    dest.write_bytes(data[:100])
    with pytest.raises(OfflineError) as info:
        hub.fetch(url, dest, expected_size=len(data), offline=True)
    assert "(it has 100 bytes, expected 4000)" in str(info.value)


def _url_folder_of(url: str, cache: Path) -> Path:
    return cache / "urls" / hashlib.sha256(url.encode()).hexdigest()[:16]


def test_download_url_uses_the_newest_cached_file_and_ignores_the_rest(server, cache):
    url = server.url("/w/model.pth")
    folder = _url_folder_of(url, cache)
    folder.mkdir(parents=True)
    for name, age in [("b_old.pth", 300), ("a_new.pth", 200), ("a_new.pth.lock", 10), ("z.LOCK.pth", 250),
                      ("a_new.pth.0a1b.incomplete", 10), (".hidden", 10)]:
        (folder / name).write_bytes(name.encode())
        os.utime(folder / name, (time.time() - age, time.time() - age))
    (folder / "zz_folder").mkdir()
    assert hub.download_url(url, offline=True) == folder / "a_new.pth"
    (folder / "a_new.pth").unlink()
    assert hub.download_url(url, offline=True) == folder / "z.LOCK.pth"
    assert server.requests == []


def test_download_url_with_only_a_lock_left_downloads_again(server, cache):
    data = payload(1000)
    url = server.serve("/only/lock.pth", data)
    folder = _url_folder_of(url, cache)
    folder.mkdir(parents=True)
    (folder / "lock.pth.lock").write_bytes(b"")
    with pytest.raises(OfflineError) as info:
        hub.download_url(url, offline=True)
    message = str(info.value)
    assert "offline=True was passed" in message and f"panns_infer.hub.download_url({url!r})" in message
    assert str(folder / "lock.pth") in message
    path = hub.download_url(url, progress=False)  # no sha256: the length is still checked
    assert path == folder / "lock.pth" and path.read_bytes() == data


def test_download_url_names_the_file_as_the_server_says_or_download(server, cache, monkeypatch):
    data = payload(500)
    named = server.serve("/files/123/content", data,
                         headers={"Content-Disposition": 'attachment; filename="Cnn14_mAP=0.431.pth"'})
    assert hub.download_url(named).name == "Cnn14_mAP=0.431.pth"
    bare = server.serve("/", data)
    assert hub.download_url(bare, sha256=hashlib.sha256(data).hexdigest().upper()).name == "download"


def test_download_url_argument_errors_say_what_is_wrong(cache):
    for url in ("ftp://example.org/x.pth", "HTTPS://example.org/x.pth"[:0] + "file:///x.pth", 3):
        with pytest.raises(ValueError) as info:
            hub.download_url(url)  # type: ignore[arg-type]
        assert str(info.value) == f"download_url needs an http(s) URL, got {url!r}"
    with pytest.raises(ValueError) as info:
        hub.download_url("https://example.org/x.pth", sha256="md5:" + "0" * 32)
    assert str(info.value) == f"sha256 must be a SHA-256 hex digest, got {'md5:' + '0' * 32!r}"
    with pytest.raises(OfflineError):  # an https URL is accepted (and here not fetched)
        hub.download_url("https://example.org/x.pth", offline=True)


def test_download_url_and_download_hide_the_bar_when_asked(server, cache, monkeypatch):
    stream = _FakeTTY()
    monkeypatch.setattr(sys, "stderr", stream)
    data = payload(3 * transport._CHUNK)
    hub.download_url(server.serve("/bar/u.pth", data), progress=False)
    entry = registry.Checkpoint(name="T", filename="T.pth", arch="Cnn6", mAP=0.0, checksum=sha256(data),
                                size=len(data))
    server.serve("/m/T.pth", data)
    monkeypatch.setenv("PANNS_INFER_MIRROR", server.url("/m"))
    hub.download(entry, progress=False)
    assert stream.getvalue() == ""


def test_download_and_download_url_use_fetch_defaults(server, cache, monkeypatch):
    seen: list = []
    real = hub._stream

    def spy(*args, **kwargs):
        seen.append((kwargs["timeout"], kwargs["retries"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(hub, "_stream", spy)
    data = payload(100)
    entry = registry.Checkpoint(name="T", filename="T.pth", arch="Cnn6", mAP=0.0, checksum=sha256(data))
    server.serve("/m/T.pth", data)
    monkeypatch.setenv("PANNS_INFER_MIRROR", server.url("/m"))
    hub.download(entry)
    hub.download_url(server.serve("/d/u.pth", data))
    hub.fetch(server.url("/d/u.pth"), cache / "f.pth")
    assert seen == [(30.0, 5)] * 3


def test_download_checks_the_published_size_before_the_body(server, cache, monkeypatch):
    good = payload(1000)
    entry = registry.Checkpoint(name="T", filename="T.pth", arch="Cnn6", mAP=0.0, checksum=sha256(good),
                                size=len(good))
    server.serve("/m/T.pth", payload(1200, seed=3))
    monkeypatch.setenv("PANNS_INFER_MIRROR", server.url("/m"))
    with pytest.raises(ChecksumError) as info:
        hub.download(entry)
    assert str(info.value) == (
        f"{server.url('/m/T.pth')!r} is 1200 bytes according to the server, but the published size is 1000 "
        "bytes; nothing was kept. Likely causes: the file changed upstream, or a mirror or proxy serves a "
        "different file.")
    assert leftovers(cache / "checkpoints") == []


# --------------------------------------------------------------------------- resolve_checkpoint


@pytest.fixture
def mirrored_cnn6(server, monkeypatch):
    """Cnn6 in the registry pinned to small bytes served by the loopback mirror."""
    data = b"released weights"
    entry = registry.Checkpoint(name="Cnn6", filename="Cnn6_mAP=0.343.pth", arch="Cnn6", mAP=0.343,
                                checksum=sha256(data), size=len(data))
    monkeypatch.setitem(registry.CHECKPOINTS, "Cnn6", entry)
    monkeypatch.setattr(registry, "_TABLE", tuple(entry if c.name == "Cnn6" else c for c in registry._TABLE))
    monkeypatch.setitem(registry._BY_FILENAME, entry.filename.lower(), entry)
    server.serve("/m/Cnn6_mAP%3D0.343.pth", data)
    monkeypatch.setenv("PANNS_INFER_MIRROR", server.url("/m"))
    return entry


@pytest.mark.parametrize("how", ["entry", "name", "file name", "url"])
def test_resolve_checkpoint_passes_offline_and_progress_on(server, cache, monkeypatch, tmp_path, mirrored_cnn6, how):
    monkeypatch.chdir(tmp_path)
    url = server.url("/m/Cnn6_mAP%3D0.343.pth")
    reference = {"entry": mirrored_cnn6, "name": "Cnn6", "file name": "Cnn6_mAP=0.343.pth", "url": url}[how]
    with pytest.raises(OfflineError, match=r"offline=True was passed"):
        hub.resolve_checkpoint(reference, offline=True)
    assert server.requests == []
    stream = _FakeTTY()
    monkeypatch.setattr(sys, "stderr", stream)
    path, found = hub.resolve_checkpoint(reference, progress=False)
    assert path.read_bytes() == b"released weights" and stream.getvalue() == ""
    assert found == (None if how == "url" else mirrored_cnn6)
    if how == "url":
        with pytest.raises(ChecksumError):
            hub.resolve_checkpoint(url, sha256="0" * 64)


def test_resolve_checkpoint_https_url_is_a_url(cache):
    with pytest.raises(OfflineError, match="download_url"):
        hub.resolve_checkpoint("https://example.org/Cnn6.pth", offline=True)


def test_resolve_checkpoint_errors_in_full(cache, monkeypatch, tmp_path):
    from panns_infer.errors import CheckpointNotFoundError, InvalidArgumentError, UnknownModelError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidArgumentError) as info:
        hub.resolve_checkpoint(3)  # type: ignore[arg-type]
    assert str(info.value) == "checkpoint must be a name, path or URL, got int"
    for missing in ("nosuch.pth", "sub/Cnn6_mAP=0.343.pth", "./nosuch"):
        with pytest.raises(CheckpointNotFoundError) as info:
            hub.resolve_checkpoint(missing)
        assert str(info.value) == (
            f"checkpoint file {missing!r} does not exist; pass an existing .pth file, a registry name "
            "(see panns_infer.list_models()) or an http(s) URL")
    for unknown in ("nosuch.txt", "NoSuchModel"):
        with pytest.raises(UnknownModelError):
            hub.resolve_checkpoint(unknown)


# --------------------------------------------------------------------------- answers, scripted


class _Answer:
    """A stand-in for a streamed requests.Response: ``body`` is delivered, then ``then``
    (an exception to raise) or a silent end."""

    def __init__(self, status: int, body: bytes = b"", headers: dict = None, then: BaseException = None):
        import requests

        self.status_code, self.reason = status, ""
        self.headers = requests.structures.CaseInsensitiveDict(headers or {})
        self.body, self.then = body, then

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def close(self):
        pass

    def iter_content(self, size):
        for offset in range(0, len(self.body), size):
            yield self.body[offset:offset + size]
        if self.then is not None:
            raise self.then


def _script(monkeypatch, *answers) -> list:
    """Replace the network with ``answers`` in order; returns the byte offsets asked for."""
    asked: list = []
    pending = list(answers)

    def fake_open(session, url, dest, start, timeout):
        asked.append(start)
        if not pending:
            raise AssertionError(f"an unexpected request from byte {start}")
        return pending.pop(0)

    monkeypatch.setattr(transport, "_open_response", fake_open)
    return asked


def _dropped():
    import requests

    return requests.ConnectionError("connection dropped")


def test_a_416_at_the_end_of_the_file_completes_it(cache, monkeypatch):
    stream = _FakeTTY()
    monkeypatch.setattr(sys, "stderr", stream)
    data = payload(5000)
    asked = _script(monkeypatch, _Answer(200, data, then=_dropped()),  # no length: cannot tell it was all
                    _Answer(416, headers={"Content-Range": "bytes */5000"}))
    assert hub.fetch("http://h.example/a.bin", cache / "a.bin", checksum=sha256(data)).read_bytes() == data
    assert asked == [0, 5000]
    assert "100% |####################| 5.0 kB/5.0 kB" in stream.getvalue()


@pytest.mark.parametrize("content_range", [None, "bytes */3", "bytes */0"])
def test_a_416_that_does_not_match_starts_again_from_zero(cache, monkeypatch, caplog, content_range):
    headers = {} if content_range is None else {"Content-Range": content_range}
    asked = _script(monkeypatch, _Answer(200, b"abcde", then=_dropped()), _Answer(416, headers=headers),
                    _Answer(200, b"abc", {"Content-Length": "3"}))
    with caplog.at_level(logging.WARNING, logger="panns_infer"):
        assert hub.fetch("http://h.example/b.bin", cache / "b.bin", retries=1).read_bytes() == b"abc"
    assert asked == [0, 5, 0]
    assert [r.getMessage() for r in caplog.records][1] == (
        "download of http://h.example/b.bin interrupted (HTTP 416 Range Not Satisfiable; starting again from "
        "zero); retrying in 0.0 s")
    _script(monkeypatch, _Answer(200, b"abcde", then=_dropped()), _Answer(416, headers=headers))
    with pytest.raises(DownloadError, match=r"after 1 tries without progress; last error: HTTP 416 Range Not "
                                            r"Satisfiable; starting again from zero\."):
        hub.fetch("http://h.example/b.bin", cache / "b2.bin", retries=0)


def test_a_416_for_a_request_from_byte_zero_is_not_a_complete_file(cache, monkeypatch):
    asked = _script(monkeypatch, _Answer(416, headers={"Content-Range": "bytes */0"}), _Answer(200, b"xyz"))
    assert hub.fetch("http://h.example/z.bin", cache / "z.bin", retries=1).read_bytes() == b"xyz"
    assert asked == [0, 0]


@pytest.mark.parametrize("content_range", ["bytes 0-9/10", None])
def test_a_resume_at_the_wrong_byte_starts_again_from_zero(cache, monkeypatch, content_range):
    data = b"0123456789"
    headers = {"Content-Length": "10"} if content_range is None else {"Content-Range": content_range,
                                                                      "Content-Length": "10"}
    asked = _script(monkeypatch, _Answer(200, data[:4], {"Content-Length": "10"}, then=_dropped()),
                    _Answer(206, data, headers), _Answer(200, data, {"Content-Length": "10"}))
    assert hub.fetch("http://h.example/w.bin", cache / "w.bin", retries=1).read_bytes() == data
    assert asked == [0, 4, 0]
    start = "0" if content_range else "None"
    _script(monkeypatch, _Answer(200, data[:4], {"Content-Length": "10"}, then=_dropped()),
            _Answer(206, data, headers))
    with pytest.raises(DownloadError) as info:
        hub.fetch("http://h.example/w.bin", cache / "w2.bin", retries=0)
    assert f"last error: server resumed at byte {start}, not 4; starting again from zero." in str(info.value)


def test_an_encoded_resume_starts_again_from_zero(cache, monkeypatch):
    data = b"0123456789"
    asked = _script(monkeypatch, _Answer(200, data[:4], {"Content-Length": "10"}, then=_dropped()),
                    _Answer(206, data[4:], {"Content-Range": "bytes 4-9/10", "Content-Encoding": "gzip"}),
                    _Answer(200, data, {"Content-Length": "10"}))
    assert hub.fetch("http://h.example/e.bin", cache / "e.bin", retries=1).read_bytes() == data
    assert asked == [0, 4, 0]


@pytest.mark.parametrize("headers", [{"Content-Range": "bytes 4-9/*", "Content-Length": "6"},
                                     {"Content-Range": "bytes 4-9/10"}])
def test_a_resumed_answer_that_ends_early_is_resumed_again(cache, monkeypatch, caplog, headers):
    data = b"0123456789"
    asked = _script(monkeypatch, _Answer(200, data[:4], {"Content-Length": "10"}, then=_dropped()),
                    _Answer(206, data[4:7], headers),  # ends silently after 3 of 6 bytes
                    _Answer(206, data[7:], {"Content-Range": "bytes 7-9/10"}))
    with caplog.at_level(logging.WARNING, logger="panns_infer"):
        assert hub.fetch("http://h.example/r.bin", cache / "r.bin", retries=0).read_bytes() == data
    assert asked == [0, 4, 7]
    assert [r.getMessage() for r in caplog.records] == [
        "download of http://h.example/r.bin interrupted (ConnectionError: connection dropped); resuming at byte 4 "
        "in 0.0 s",
        "download of http://h.example/r.bin interrupted (connection closed after 7 of 10 bytes); resuming at byte 7 "
        "in 0.0 s"]


def test_a_resumed_answer_of_unknown_size_is_taken_as_it_comes(cache, monkeypatch):
    data = b"0123456789"
    asked = _script(monkeypatch, _Answer(200, data[:4], {"Content-Length": "10"}, then=_dropped()),
                    _Answer(206, data[4:], {"Content-Range": "bytes 4-9/*", "Content-Length": "x"}))
    assert hub.fetch("http://h.example/u.bin", cache / "u.bin", retries=0).read_bytes() == data
    _script(monkeypatch, _Answer(200, data[:4], {"Content-Length": "10"}, then=_dropped()),
            _Answer(206, data[4:], {"Content-Range": "bytes 4-9/*"}))
    assert hub.fetch("http://h.example/u.bin", cache / "u2.bin", retries=0).read_bytes() == data
    assert asked == [0, 4]


def test_a_server_ignoring_range_is_logged(cache, monkeypatch, caplog):
    data = b"0123456789"
    _script(monkeypatch, _Answer(200, data[:4], {"Content-Length": "10"}, then=_dropped()),
            _Answer(200, data, {"Content-Length": "10"}))
    with caplog.at_level(logging.INFO, logger="panns_infer"):
        hub.fetch("http://h.example/i.bin", cache / "i.bin", retries=0)
    assert ("http://h.example/i.bin: the server ignored the Range request; downloading again from zero"
            in [r.getMessage() for r in caplog.records])


def test_an_answer_without_length_is_checked_against_the_published_size(cache, monkeypatch):
    data = b"0123456789"
    _script(monkeypatch, _Answer(200, data))
    assert hub.fetch("http://h.example/l.bin", cache / "l.bin", expected_size=10).read_bytes() == data
    _script(monkeypatch, _Answer(200, data[:7]))
    with pytest.raises(ChecksumError) as info:
        hub.fetch("http://h.example/l.bin", cache / "l2.bin", expected_size=10)
    assert str(info.value) == (
        "'http://h.example/l.bin' gave 7 bytes, but the published size is 10 bytes; the file was deleted. "
        "Likely causes: a truncated download, a file changed upstream, or a mirror that serves a different file.")
    assert leftovers(cache) == ["l.bin"]


def test_an_encoded_answer_is_not_held_to_its_content_length(cache, monkeypatch):
    data = b"0123456789" * 10
    for encoding in ("gzip", "GZIP"):
        _script(monkeypatch, _Answer(200, data, {"Content-Length": "30", "Content-Encoding": encoding}))
        assert hub.fetch("http://h.example/g.bin", cache / f"{encoding}.bin").read_bytes() == data
    _script(monkeypatch, _Answer(200, data[:30], {"Content-Length": "100", "Content-Encoding": ""}),
            _Answer(206, data[30:], {"Content-Range": "bytes 30-99/100"}))
    assert hub.fetch("http://h.example/g.bin", cache / "plain.bin", retries=0).read_bytes() == data


def test_more_bytes_than_announced_is_an_error(cache, monkeypatch):
    _script(monkeypatch, _Answer(200, b"0123456789", {"Content-Length": "5"}))
    with pytest.raises(DownloadError) as info:
        hub.fetch("http://h.example/m.bin", cache / "m.bin")
    assert str(info.value) == ("'http://h.example/m.bin' sent 10 bytes but announced 5; the server is misbehaving. "
                               "Try again later.")
    assert leftovers(cache) == []


def test_one_byte_per_answer_is_still_progress(cache, monkeypatch):
    asked = _script(monkeypatch, _Answer(200, b"a", {"Content-Length": "3"}, then=_dropped()),
                    _Answer(206, b"b", {"Content-Range": "bytes 1-2/3"}, then=_dropped()),
                    _Answer(206, b"c", {"Content-Range": "bytes 2-2/3"}))
    assert hub.fetch("http://h.example/one.bin", cache / "one.bin", retries=0).read_bytes() == b"abc"
    assert asked == [0, 1, 2]


def test_requests_ask_for_the_bytes_as_stored(server, cache):
    data = payload(3 * transport._CHUNK)
    url = server.serve("/id.bin", data, truncate_after=transport._CHUNK + 5, truncate_times=1)
    hub.fetch(url, cache / "id.bin")
    assert [r.accept_encoding for r in server.records("/id.bin")] == ["identity", "identity"]


def test_the_bar_shows_the_share_while_downloading(server, cache, monkeypatch):
    stream = _FakeTTY()
    monkeypatch.setattr(sys, "stderr", stream)
    url = server.serve("/share.bin", payload(4 * transport._CHUNK))
    hub.fetch(url, cache / "share.bin")
    assert stream.getvalue().startswith("\rshare.bin  25% |#####               | 65.5 kB/262.1 kB ")


def test_a_tls_error_message_in_full(cache, monkeypatch):
    import requests

    def untrusted(self, url, **kwargs):
        raise requests.exceptions.SSLError("certificate verify failed")

    monkeypatch.setattr(requests.Session, "get", untrusted)
    with pytest.raises(DownloadError) as info:
        hub.fetch("https://h.example/t.bin", cache / "t.bin")
    assert str(info.value) == (
        "downloading 'https://h.example/t.bin' failed: TLS/SSL error (certificate verify failed). Check the system "
        "clock and the certificate store (REQUESTS_CA_BUNDLE), or set PANNS_INFER_MIRROR to a trusted copy. You can "
        f"also get the file by other means and copy it to {str(cache / 't.bin')!r}. (Not retried: this error does "
        "not go away by itself.)")


def test_an_unresolved_host_message_in_full(cache, monkeypatch):
    import socket

    import requests

    def unresolvable(self, url, **kwargs):
        raise requests.ConnectionError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(requests.Session, "get", unresolvable)
    with pytest.raises(DownloadError) as info:
        hub.fetch("https://h.example/n.bin", cache / "n.bin")
    assert str(info.value) == (
        "downloading 'https://h.example/n.bin' failed: the host name 'h.example' could not be resolved ([Errno -2] "
        "Name or service not known). Check the network connection (and proxy settings) and the URL's host name. You "
        f"can also get the file by other means and copy it to {str(cache / 'n.bin')!r}. (Not retried: this error "
        "does not go away by itself.)")


def test_a_malformed_url_fails_at_once_and_says_why(cache):
    with pytest.raises(DownloadError) as info:
        hub.fetch("http://", cache / "u.bin")
    assert str(info.value).startswith("cannot download 'http://': ")
    assert len(str(info.value)) > len("cannot download 'http://': ")


@pytest.mark.parametrize("bad, message", [
    ("abc", "checksum must look like 'sha256:<hex>' or 'md5:<hex>', got 'abc'"),
    (b"sha256:00", "checksum must look like 'sha256:<hex>' or 'md5:<hex>', got b'sha256:00'"),
    ("sha1:" + "0" * 40, "Supported checksum algorithms are ('md5', 'sha256'). Found: 'sha1'"),
    ("md5:" + "0" * 31, "a md5 checksum is 32 hex digits, got '" + "0" * 31 + "'"),
    ("md5:" + "0" * 31 + "X", "a md5 checksum is 32 hex digits, got '" + "0" * 31 + "x'"),
    ("md5:" + "0" * 30 + ":0", "a md5 checksum is 32 hex digits, got '" + "0" * 30 + ":0'"),
])
def test_checksum_spec_errors_in_full(bad, message):
    with pytest.raises(ValueError) as info:
        transport._parse_checksum(bad)
    assert str(info.value) == message


def test_only_this_files_old_partial_downloads_are_removed(server, cache, caplog):
    url = server.serve("/st2.bin", b"data")
    cache.mkdir(parents=True, exist_ok=True)
    mine, other = cache / "st2.bin.aaaa.incomplete", cache / "other.bin.bbbb.incomplete"
    for path in (mine, other):
        path.write_bytes(b"old")
        os.utime(path, (time.time() - 2 * 86400,) * 2)
    with caplog.at_level(logging.INFO, logger="panns_infer"):
        hub.fetch(url, cache / "st2.bin")
    assert not mine.exists() and other.exists()
    assert f"removed the stale partial download {mine}" in [r.getMessage() for r in caplog.records]


def test_the_last_error_of_exhausted_retries_is_named(server, cache, monkeypatch):
    import socket

    url = server.serve("/e503.bin", b"x", fail_times=100, fail_status=503)
    with pytest.raises(DownloadError, match=r"last error: HTTP 503 Service Unavailable\. Check"):
        hub.fetch(url, cache / "e.bin", retries=0)
    url = server.serve("/e599.bin", b"x", fail_times=100, fail_status=599)  # a status without a reason
    with pytest.raises(DownloadError, match=r"last error: HTTP 599\. Check"):
        hub.fetch(url, cache / "e.bin", retries=0)
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DownloadError, match=r"last error: ConnectionError: "):
        hub.fetch(f"http://127.0.0.1:{port}/x.bin", cache / "x.bin", retries=0, timeout=5)


def test_a_real_416_at_the_end_of_a_file_that_shrank_completes_it(server, cache, monkeypatch):
    data = payload(3 * transport._CHUNK)
    cut = transport._CHUNK + 100
    url = server.serve("/shrunk.bin", data, truncate_after=cut, truncate_times=1)
    real = transport._open_response

    def shrink_before_resuming(session, url, dest, start, timeout):
        if start:
            server.serve("/shrunk.bin", data[:start])
        return real(session, url, dest, start, timeout)

    monkeypatch.setattr(transport, "_open_response", shrink_before_resuming)
    path = hub.fetch(url, cache / "shrunk.bin", retries=0)
    assert [r.status for r in server.records("/shrunk.bin")] == [200, 416]
    assert path.read_bytes() == data[:path.stat().st_size] and path.stat().st_size >= transport._CHUNK
