"""Running a completion's Python against its reference's doctests, away from the studio.

Owns the `doctests` reward's work: the examples (`>>> ` lines and the output they expect) in a
reference answer, and one run of a completion's code with them — in a fresh Python process
(isolated mode: no user site folder, no PYTHON* variables), in an empty temporary folder that is
removed after, with the network switched off inside it (opening a socket or looking up a name
raises), at most SECONDS of wall time (then it is killed and scores 0) and, where the OS has the
limit, MEMORY_MB of memory. The code is the model's own answer, run on the user's own machine as
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

# Runs in the child: argv = [memory MB, result file]; stdin = {"code", "examples": [[source, want]]}.
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
job = json.load(sys.stdin)
out = sys.argv[2]
glob = {"__name__": "__reward__"}
try:
    exec(compile(job["code"], "<completion>", "exec"), glob)
except BaseException as e:
    result = {"tried": len(job["examples"]), "failed": len(job["examples"]), "error": type(e).__name__}
else:
    test = doctest.DocTest([doctest.Example(s, w) for s, w in job["examples"]], glob, "reference",
                           None, 0, None)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    r = runner.run(test, out=lambda text: None)
    result = {"tried": r.attempted, "failed": r.failed}
with open(out, "w") as f:
    json.dump(result, f)
"""


def examples(reference: str) -> list[list[str]]:
    """The doctest examples in the docstrings of a reference answer's code (module, classes,
    functions): [[source, expected output], ...]; none where the code does not parse."""
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
            out += [[ex.source, ex.want] for ex in doctest.DocTestParser().get_examples(doc)]
        except ValueError:  # a malformed example (">>>" without a space after it): left out
            continue
    return out


def run(code: str, cases: list[list[str]], seconds: float = SECONDS) -> dict[str, object]:
    """{tried, failed, error?} of `cases` against `code`, in the sandbox described above; a run
    that outlives `seconds` or dies is every case failed, with the reason in `error`."""
    with tempfile.TemporaryDirectory(prefix="studio-reward-") as tmp:
        result = Path(tmp) / "result.json"
        try:
            subprocess.run([sys.executable, "-I", "-c", RUNNER, str(MEMORY_MB), str(result)],
                           input=json.dumps({"code": code, "examples": cases}), text=True, cwd=tmp,
                           capture_output=True, timeout=seconds)
        except subprocess.TimeoutExpired:
            return {"tried": len(cases), "failed": len(cases), "error": f"over {seconds:g} s"}
        try:
            return json.loads(result.read_text())
        except (OSError, ValueError):
            return {"tried": len(cases), "failed": len(cases), "error": "the process ended early"}
