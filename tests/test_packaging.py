"""The wheel: everything under forwardpass/, nothing with a generic name at the top, one script."""

import subprocess
import sys
import zipfile
from pathlib import Path

from forwardpass.web import PAGE_FILES

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_puts_everything_under_forwardpass(tmp_path):
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path), str(ROOT)]
    subprocess.run(build, check=True, capture_output=True)
    (wheel,) = tmp_path.glob("forwardpass-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"forwardpass", next(t for t in tops if t.endswith(".dist-info"))}, tops
    for module in (
        "builder/spec.py",
        "builder/graph.py",
        "builder/oracle.py",
        "server/__init__.py",
        "protos/__init__.py",
        "runtime.py",
        "cli.py",
        "web/index.html",  # the page, its lock file pinning onnxruntime-web, and that one's licence
        "web/page.js",
        "web/package-lock.json",
        "web/onnxruntime-web.LICENSE",
        "web/docs/index.html",  # /docs and the lock pinning Swagger UI, which is fetched
        "web/docs/docs.js",
        "web/docs/package-lock.json",
        "server/openapi.py",
    ):
        assert f"forwardpass/{module}" in names, module
    for name in PAGE_FILES:  # every file the server serves for the page
        assert f"forwardpass/web/{name}" in names, name
    fetched = [n for n in names if n.endswith((".wasm", "swagger-ui-bundle.js")) or "node_modules" in n]
    assert not fetched  # fetched, never shipped
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "forwardpass = forwardpass.cli:main" in entry_points
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    version = (ROOT / "forwardpass" / "__init__.py").read_text().split('__version__ = "', 1)[1].split('"')[0]
    assert f"\nVersion: {version}\n" in metadata  # pyproject reads it from forwardpass.__version__, its one place
    assert "Provides-Extra: cpu" in metadata and "Provides-Extra: gpu" in metadata
    ort = [line for line in metadata.splitlines() if line.startswith("Requires-Dist: onnxruntime")]
    assert len(ort) == 2 and all("extra ==" in line for line in ort), ort  # never a hard dependency
