"""Launching the app: a port in use gets a clear message, and the app builds without torch."""
import socket
import subprocess
import sys

from conftest import ROOT


def test_port_in_use_says_what_to_do(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([sys.executable, "app.py", "--port", str(port), "--home", str(tmp_path),
                            "--no-browser"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "already in use" in r.stderr and f"--port {port + 1}" in r.stderr


def test_bad_home_is_a_message(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r = subprocess.run([sys.executable, "app.py", "--home", str(f), "--port", "0"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "is a file" in r.stderr and "Traceback" not in r.stderr


def test_app_builds_without_importing_torch(tmp_path):
    code = ("import sys; from studio.api import Studio; from studio.ui import build_app; "
            f"build_app(Studio({str(tmp_path)!r})); "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "False False"
