"""Running a completion's Python against its reference's doctests, away from the studio.

Owns the `doctests` reward's work: the examples (`>>> ` lines and the output they expect) in a
reference answer, and one run of a completion's code with them — in a fresh Python process
(isolated mode: no user site folder, no PYTHON* variables), in an empty temporary folder that is
removed after, its output discarded, with the network switched off inside it (opening a socket
or looking up a name raises), at most SECONDS of wall time (then it and, on Linux and macOS,
whatever it started are killed, and it scores 0) and, where the OS has the limit, MEMORY_MB of
memory. The code is the model's own answer, run on the user's own machine as
part of their run: the limits keep a wrong answer from hanging or flooding a run; they are not a
boundary against hostile code.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

SECONDS = 5.0
MEMORY_MB = 1024

# Runs in the child: argv = [memory MB, job file, result file]; the job is {"code", "docs"}: the
# completion's code and the reference's docstrings, parsed here so that expected exceptions and
# directives (# doctest: +SKIP) keep their meaning.
RUNNER = r"""
import doctest, json, socket, sys

def _off(*args, **kwargs):
    raise OSError("the network is off while a reward runs code")

socket.socket = socket.create_connection = socket.getaddrinfo = _off
try:
    import resource
    cap = int(sys.argv[1]) * 2 ** 20
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
except (ImportError, ValueError, OSError):
    pass
with open(sys.argv[2]) as f:
    job = json.load(f)
glob = {"__name__": "__reward__"}
tests = [doctest.DocTestParser().get_doctest(d, glob, "reference", None, 0) for d in job["docs"]]
n = sum(len(t.examples) for t in tests)
try:
    exec(compile(job["code"], "<completion>", "exec"), glob)
except BaseException as e:
    result = {"tried": n, "failed": n, "error": type(e).__name__}
else:
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for t in tests:
        t.globs = glob  # the test keeps a copy of the names it was parsed with: give it the code's
        runner.run(t, out=lambda text: None, clear_globs=False)
    tried, failed = runner.tries, runner.failures
    result = {"tried": tried, "failed": failed}
with open(sys.argv[3], "w") as f:
    json.dump(result, f)
"""


def docstrings(reference: str) -> list[str]:
    """The docstrings of a reference answer's code (module, classes, functions) that hold doctest
    examples; none where the code does not parse."""
    import ast
    import doctest

    try:
        tree = ast.parse(reference)
    except (SyntaxError, ValueError):
        return []
    docs = [ast.get_docstring(n, clean=True) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    out = []
    for doc in filter(None, docs):
        try:
            if doctest.DocTestParser().get_examples(doc):
                out.append(doc)
        except ValueError:  # a malformed example (">>>" without a space after it): left out
            continue
    return out


def run(code: str, docs: list[str], seconds: float = SECONDS) -> dict[str, object]:
    """{tried, failed, error?} of the examples in `docs` against `code`, in the sandbox above.
    Its output goes nowhere (a flood of prints costs nothing here); a run that outlives `seconds`
    or dies is every example failed, with the reason in `error`; whatever it started is stopped
    with it (its whole process group on Linux and macOS)."""
    import doctest
    import os

    cases = sum(len(doctest.DocTestParser().get_examples(d)) for d in docs)
    with tempfile.TemporaryDirectory(prefix="studio-reward-", ignore_cleanup_errors=True) as tmp:
        job, result = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job.write_text(json.dumps({"code": code, "docs": docs}), encoding="utf-8")
        posix = os.name == "posix"
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", RUNNER, str(MEMORY_MB), str(job), str(result)], cwd=tmp,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=posix, creationflags=0 if posix else subprocess.CREATE_NEW_PROCESS_GROUP)
        try:
            proc.wait(timeout=seconds)
            late = False
        except subprocess.TimeoutExpired:
            late = True
        finally:
            _stop(proc, posix)
        if late:
            return {"tried": cases, "failed": cases, "error": f"over {seconds:g} s"}
        try:
            return json.loads(result.read_text())
        except (OSError, ValueError):
            return {"tried": cases, "failed": cases, "error": "the process ended early"}


def _stop(proc, posix: bool) -> None:
    """The child and, on POSIX, every process it started (its own session's group)."""
    import os
    import signal

    if posix:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if proc.poll() is None:
        proc.kill()
    proc.wait()
