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
        for path in ("/metrics", "/status", "/api/session"):
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


def test_the_running_controller_guards_every_web_endpoint(web_config: Path, tmp_path: Path) -> None:
    """`kvm-warden run --simulate --web-config`: the web view, its API, noVNC's files, the
    console ticket and the event stream -- no, wrong and right credentials, over TLS."""
    import re
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "controller.app.cli", "run", "--simulate",
                                 "--http-port", str(port), "--web-config",
                                 str(web_config / "web.yml")], stdout=out, stderr=subprocess.STDOUT)
    base, ca = f"https://127.0.0.1:{port}", web_config / "cert.pem"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not re.search(r"pass", log.read_text()):
            time.sleep(0.2)
        paths = ["/", "/vm/web01", "/static/app.js", "/api/vms", "/api/vms/web01",
                 "/api/vms/web01/scores",
                 "/api/history", "/metrics", "/status", "/novnc/core/rfb.js"]
        for path in paths:
            assert get(base + path, ca)[0] == 401, path
            code, body = get(base + path, ca, "ops", "wrong")
            assert code == 401 and b"web01" not in body, path
        for path in paths:
            code, body = get(base + path, ca, "ops", PASSWORD)
            assert code == 200, (path, code)
        # --simulate has no agents to relay a console to: the page says it is unavailable.
        assert json.loads(get(base + "/api/vms", ca, "ops", PASSWORD)[1])["console"] is False
        # The console ticket: a POST, for users only; the WebSocket without a ticket: refused.
        for user, password, want in ((None, None, 401), ("ops", "wrong", 401)):
            req = urllib.request.Request(base + "/api/vms/web01/console", method="POST")
            if user:
                req.add_header("Authorization", "Basic " + base64.b64encode(
                    f"{user}:{password}".encode()).decode())
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=10,
                                       context=ssl.create_default_context(cafile=str(ca)))
            assert err.value.code == want
            err.value.close()
        assert get(base + "/console/web01/ws?ticket=guessed", ca)[0] == 403
        # Path tricks do not leave noVNC's directory.
        assert get(base + "/novnc/../../../etc/passwd", ca, "ops", PASSWORD)[0] == 404
        # `kvm-warden status --url` reads it with the operator's credentials from the
        # environment, and says what is missing without them.
        import os

        status = [sys.executable, "-m", "controller.app.cli", "status", "--url", base,
                  "--cacert", str(ca)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("KVM_WARDEN_")}
        res = subprocess.run(status, capture_output=True, text=True, timeout=60, env=env)
        assert res.returncode == 1 and "HTTP 401 (set KVM_WARDEN_USER" in res.stderr, res.stderr
        res = subprocess.run(status, capture_output=True, text=True, timeout=60,
                             env={**env, "KVM_WARDEN_USER": "ops", "KVM_WARDEN_PASSWORD": PASSWORD})
        assert res.returncode == 0 and "web01" in res.stdout, res.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)
