"""A zygote for the tests' CLI calls: `python -m studio …` without paying its imports each time.

Started once per test session (conftest.run_cli), it imports torch, transformers, peft and the
studio, never runs a tensor operation (so no thread pool exists to break in a fork), and then
serves requests on stdin, one JSON line each — {"argv", "env", "cwd", "timeout"} — by forking a
child that sets that environment and folder, runs `studio.cli.main(argv)` with its own stdout and
stderr, and exits with main's code (or dies however it dies: kill -9 at a crash point is a
real SIGKILL of a real process). The answer is one JSON line: {"returncode", "stdout",
"stderr"}, returncode negative for a signal, as subprocess reports it. A CLI call costs the fork
and the work, not the ≈3.5 s of imports.
"""
import json
import os
import signal
import sys
import tempfile
import time
import traceback


def child(req: dict, out_path: str, err_path: str) -> None:
    """In the forked child: become `python -m studio ARGV` and exit with its code."""
    code = 1
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(os.open(out_path, os.O_WRONLY | os.O_TRUNC), 1)
        os.dup2(os.open(err_path, os.O_WRONLY | os.O_TRUNC), 2)
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False, buffering=1)
        sys.stderr = open(2, "w", encoding="utf-8", closefd=False, buffering=1)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        sys.argv = ["python -m studio", *req["argv"]]
        from studio.cli import main

        code = main(req["argv"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int) and e.code is not None:
            print(e.code, file=sys.stderr)
    except BaseException:  # what the interpreter would print for an uncaught exception
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) else 1)


def serve() -> None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo's studio
    before = dict(os.environ)
    import peft  # noqa: F401  (the imports every CLI call would pay)
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import Trainer  # noqa: F401

    import lm_eval  # noqa: F401  (`eval` calls need it; its import sets HF_XET_HIGH_PERFORMANCE)
    import studio.api  # noqa: F401
    import studio.cli  # noqa: F401

    # what the imports set themselves (bitsandbytes' import sets TORCHINDUCTOR_CACHE_DIR): the
    # same in any process that imports them, so no reason for a call to need a fresh process
    import_set = sorted(k for k in os.environ if os.environ[k] != before.get(k))
    print(json.dumps({"ready": True, "import_set": import_set}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        fd_out, out_path = tempfile.mkstemp(prefix="zygote-out-")
        fd_err, err_path = tempfile.mkstemp(prefix="zygote-err-")
        os.close(fd_out)
        os.close(fd_err)
        pid = os.fork()
        if pid == 0:
            child(req, out_path, err_path)
        deadline = time.monotonic() + float(req.get("timeout") or 600)
        status, timed_out = None, False
        while status is None:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
            elif time.monotonic() > deadline:
                os.killpg(pid, signal.SIGKILL)
                status, timed_out = os.waitpid(pid, 0)[1], True
            else:
                time.sleep(0.02)
        out = {"returncode": os.waitstatus_to_exitcode(status), "timed_out": timed_out}
        for key, path in (("stdout", out_path), ("stderr", err_path)):
            with open(path, encoding="utf-8", errors="replace") as f:
                out[key] = f.read()
            os.unlink(path)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    serve()
