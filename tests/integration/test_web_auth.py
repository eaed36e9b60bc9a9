"""The HTTP port behind the exporter web configuration: TLS + bcrypt basic auth, checked over
real HTTPS with no, wrong and right credentials; off loopback nothing is served without it."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest

from controller.app.http import StatusServer
from controller.app.webconfig import WebConfigError, load_web_config
from controller.model.overview import StatusDoc, VmRow

PASSWORD = "correct horse"


@pytest.fixture(scope="module")
def web_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("web")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(d / "key.pem"), "-out", str(d / "cert.pem"), "-days", "2", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    (d / "web.yml").write_text(
        f"tls_server_config:\n  cert_file: {d / 'cert.pem'}\n  key_file: {d / 'key.pem'}\n"
        f"basic_auth_users:\n  ops: '{hashed}'\n")
    return d


def get(url: str, cafile: Path, user: str | None = None, password: str | None = None
        ) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    ctx = ssl.create_default_context(cafile=str(cafile))
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_every_data_endpoint_needs_the_password_over_tls(web_config: Path) -> None:
    doc = StatusDoc(vms=(VmRow(vm="web01", resource="vm-web01", nodes=("kvm1",), state="Started",
                               desired_state="running", desired_node="kvm1", drift=(),
                               vnc_port=None, console=None),))
    server = StatusServer("127.0.0.1", 0, lambda: doc, lambda: (True, "ready"),
                          load_web_config(web_config / "web.yml"))
    server.start()
    base = f"https://127.0.0.1:{server.port}"
    ca = web_config / "cert.pem"
    try:
        for path in ("/metrics", "/status", "/"):
            assert get(base + path, ca)[0] == 401, path
            code, body = get(base + path, ca, "ops", "wrong")
            assert (code, b"web01" in body) == (401, False), path
            assert get(base + path, ca, "nobody", PASSWORD)[0] == 401, path
            assert get(base + path, ca, "ops", PASSWORD)[0] == 200, path
        code, body = get(base + "/status", ca, "ops", PASSWORD)
        assert json.loads(body)["vms"][0]["vm"] == "web01"
        # Liveness stays open (Pacemaker's and Docker's checks carry no password, and it tells
        # nothing about the cluster).
        assert get(base + "/healthz", ca) == (200, b"ok\n")
        # Plain HTTP to the TLS port gets nothing.
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5).read()
    finally:
        server.stop()


def test_broken_web_configs_are_refused_with_the_field(tmp_path: Path, web_config: Path) -> None:
    bad = tmp_path / "web.yml"
    bad.write_text("basic_auth_users:\n  ops: plaintext\n")
    with pytest.raises(WebConfigError, match="basic_auth_users.ops: not a bcrypt hash"):
        load_web_config(bad)
    bad.write_text("tls_server_config:\n  cert_file: /nonexistent.pem\n  key_file: /x.pem\n")
    with pytest.raises(WebConfigError, match="tls_server_config: cannot load"):
        load_web_config(bad)
    bad.write_text("basic_auth_user: {}\n")
    with pytest.raises(WebConfigError, match="basic_auth_user: Extra inputs"):
        load_web_config(bad)


def test_off_loopback_the_service_refuses_to_start_without_users(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "controller.app.cli", "run", "--simulate",
                          "--http-host", "0.0.0.0", "--http-port", "0", "--passes", "1"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "needs --web-config FILE with basic_auth_users" in res.stderr
