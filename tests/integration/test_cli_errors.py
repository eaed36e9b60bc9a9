"""Clumsy command lines: one clear error line and exit 1, never a traceback; CURVE is never
dropped silently."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest


def cli(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "controller.app.cli", *argv],
                          capture_output=True, text=True, timeout=timeout)


def assert_clean_error(res: subprocess.CompletedProcess[str], words: str) -> None:
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    assert "kvm-warden: error:" in res.stderr and words in res.stderr, res.stderr


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    assert cli("keys", "generate", str(d), "kvm1").returncode == 0
    assert cli("keys", "generate", str(d), "controller").returncode == 0
    (tmp_path / "allow").mkdir()
    (tmp_path / "allow" / "controller.key").write_bytes((d / "controller.key").read_bytes())
    return d


def test_secrets_are_created_private_and_never_overwritten_silently(keys: Path) -> None:
    assert stat.S_IMODE((keys / "kvm1.key_secret").stat().st_mode) == 0o600
    before = (keys / "kvm1.key_secret").read_bytes()
    assert_clean_error(cli("keys", "generate", str(keys), "kvm1"), "--force")
    assert (keys / "kvm1.key_secret").read_bytes() == before
    assert cli("keys", "generate", str(keys), "kvm1", "--force").returncode == 0
    assert (keys / "kvm1.key_secret").read_bytes() != before


def test_a_secret_is_given_to_the_services_user(tmp_path: Path) -> None:
    """As root, `--owner` hands the 0600 secret to the user the units run as; an unknown user
    is a clear error."""
    import pwd

    assert cli("keys", "generate", str(tmp_path), "kvm2", "--owner", "nobody:nogroup"
               ).returncode == 0
    st = (tmp_path / "kvm2.key_secret").stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (pwd.getpwnam("nobody").pw_uid, 0o600)
    assert_clean_error(cli("keys", "generate", str(tmp_path), "kvm3", "--owner",
                           "no-such-user-here"), "cannot give it to no-such-user-here")


def test_keys_into_an_unwritable_place(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert_clean_error(cli("keys", "generate", str(tmp_path / "file" / "sub"), "x"),
                       "cannot write keys")


@pytest.mark.parametrize("bind, words", [
    ("tcp://127.0.0.1:65535", "port must be 1..65534"),
    ("garbage", "not a ZeroMQ endpoint"),
])
def test_agent_bind_errors(bind: str, words: str) -> None:
    assert_clean_error(cli("agent", "--bind", bind, "--libvirt-uri", "none", "--no-corosync",
                           "--insecure"), words)


def test_agent_key_errors(tmp_path: Path, keys: Path) -> None:
    base = ["agent", "--bind", "tcp://127.0.0.1:19820", "--libvirt-uri", "none", "--no-corosync",
            "--allow", str(tmp_path / "allow")]
    assert_clean_error(cli(*base, "--keys", "/nonexistent"), "cannot read a CURVE key")
    assert_clean_error(cli(*base, "--keys", str(keys / "kvm1.key")), "holds no secret key")
    os.chmod(keys / "kvm1.key_secret", 0o644)
    assert_clean_error(cli(*base, "--keys", str(keys / "kvm1.key_secret")), "readable by others")
    os.chmod(keys / "kvm1.key_secret", 0o600)
    assert_clean_error(cli("agent", "--bind", "tcp://127.0.0.1:19820", "--libvirt-uri", "none",
                           "--no-corosync", "--keys", str(keys / "kvm1.key_secret"),
                           "--allow", str(tmp_path / "missing")), "does not exist")


def test_curve_is_never_dropped_silently(tmp_path: Path, keys: Path) -> None:
    # An agent endpoint without NAME= cannot be authenticated: refused, not downgraded.
    assert_clean_error(cli("watch", "--agent", "tcp://127.0.0.1:9", "--keys",
                           str(keys / "controller.key_secret"), "--allow",
                           str(tmp_path / "allow"), "--count", "1"), "NAME=")
    # A NAME= whose public key is not in the allow-list.
    assert_clean_error(cli("watch", "--agent", "kvm9=tcp://127.0.0.1:9", "--keys",
                           str(keys / "controller.key_secret"), "--allow",
                           str(tmp_path / "allow"), "--count", "1"), "kvm9")
    # --insecure is for loopback only.
    assert_clean_error(cli("watch", "--agent", "kvm1=tcp://10.213.0.1:9820", "--insecure",
                           "--count", "1"), "refused off loopback")
    # run's watch endpoint serves without CURVE: loopback only, whatever the other flags.
    assert_clean_error(cli("run", "--simulate", "--http-port", "-1", "--passes", "1",
                           "--libvirt-uri", "test:///default", "--watch-endpoint",
                           "tcp://0.0.0.0:9829", "--keys", str(keys / "kvm1.key_secret"),
                           "--allow", str(tmp_path / "allow"), "--state-dir",
                           str(tmp_path / "state"), timeout=120), "must be on loopback")


def test_run_with_an_impossible_http_port(tmp_path: Path) -> None:
    assert_clean_error(cli("run", "--simulate", "--http-port", "99999", "--passes", "1",
                           "--state-dir", str(tmp_path / "state"), timeout=120), "0..65535")


def test_status_against_a_server_that_answers_nonsense() -> None:
    class Nonsense(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = json.dumps({"vms": "not a list"}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Nonsense)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert_clean_error(cli("status", "--url", f"http://127.0.0.1:{server.server_port}"),
                           "cannot read /status")
    finally:
        server.shutdown()
        server.server_close()


def test_the_alert_socket_is_not_writable_by_every_local_user(tmp_path: Path) -> None:
    from probes.pacemaker.alerts import AlertReceiver

    rx = AlertReceiver(str(tmp_path / "alerts.sock"), lambda env: None)
    try:
        mode = stat.S_IMODE((tmp_path / "alerts.sock").stat().st_mode)
        assert mode & 0o007 == 0, oct(mode)  # only root and Pacemaker's group may send
    finally:
        rx.close()


def test_version_missing_cib_file_and_no_cluster_say_what_to_do(tmp_path: Path) -> None:
    import platform
    from importlib.metadata import version

    out = cli("--version")
    release = Path("/etc/debian_version").read_text().split(".")[0]
    assert out.returncode == 0 and out.stdout.strip() == (
        f"kvm-warden {version('kvm-warden')} (Debian {release}, Python "
        f"{platform.python_version()})")
    assert_clean_error(cli("plan", "--desired", str(Path("config/desired-state.example.yaml")
                                                     .resolve()), "--cib", str(tmp_path / "nope.xml")),
                       "nope.xml: no such file")
    # This machine runs no Pacemaker outside the tests' namespaces: the live commands say so.
    for argv in (("observe",), ("status",)):
        assert_clean_error(cli(*argv), "cannot reach Pacemaker on this node")


def test_a_closed_pipe_ends_quietly() -> None:
    seed = Path(__file__).resolve().parents[1] / "fixtures" / "seed-settled.cib.xml"
    proc = subprocess.Popen([sys.executable, "-m", "controller.app.cli", "observe", "--cib",
                             str(seed), "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(10)
    proc.stdout.close()  # `| head -c 10`
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) in (0, 141) and "Traceback" not in err, err


def test_a_simulated_run_leaves_no_temporary_directory(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    res = subprocess.run([sys.executable, "-m", "controller.app.cli", "run", "--simulate",
                          "--http-port", "-1", "--passes", "1"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    assert list(tmp_path.iterdir()) == []
