"""Startup: seconds from `python app.py` to the first page served (aim: under 8 s on 2 cores).
Usage: .venv/bin/python benchmarks/bench_startup.py
"""
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as home:
        t0 = time.time()
        proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--home", home,
                                 "--no-browser"], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
                    break
                except OSError:
                    time.sleep(0.05)
            secs = time.time() - t0
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"first page ({len(body)} bytes) after {secs:.2f} s (aim < 8 s)")


if __name__ == "__main__":
    main()
