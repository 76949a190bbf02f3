"""The dependency rules of DESIGN.md, checked on the source tree."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "peft", "bitsandbytes", "llama_cpp", "accelerate")


def imports_of(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name.split(".")[0], node
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0], node
        elif isinstance(node, ast.ImportFrom) and node.level and node.module:
            yield "." + node.module.split(".")[0], node


def test_only_ui_imports_gradio():
    offenders = []
    for f in (ROOT / "studio").rglob("*.py"):
        if "ui" in f.relative_to(ROOT / "studio").parts[:1]:
            continue
        for name, _ in imports_of(f):
            if name == "gradio" or name == ".ui":
                offenders.append(str(f.relative_to(ROOT)))
    # launch.py is the app entry point (app.py's body) and may build the UI.
    assert [o for o in offenders if not o.endswith("launch.py")] == []


def test_heavy_imports_are_inside_functions():
    """torch & co. are never imported at module top level under studio/ (so the app starts fast)."""
    offenders = []
    for f in (ROOT / "studio").rglob("*.py"):
        tree = ast.parse(f.read_text())
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(n.split(".")[0] in HEAVY + ("gradio",) for n in names):
                    offenders.append(f"{f.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_import_studio_is_light():
    code = ("import sys, studio, studio.api, studio.presets, studio.cli; "
            "from studio.api import Studio; "
            "print([m for m in ('torch','gradio','transformers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_module_docstrings_and_size():
    for f in (ROOT / "studio").rglob("*.py"):
        tree = ast.parse(f.read_text())
        assert ast.get_docstring(tree), f"{f} has no module docstring"
        assert len(f.read_text().splitlines()) <= 600, f"{f} is over the 600-line ceiling"
