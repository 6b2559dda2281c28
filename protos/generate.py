"""Generate the Python stubs of the .proto files beside this script.

    python protos/generate.py            # rewrite the committed stubs (`make protos`)
    python protos/generate.py --check    # exit 1 if the committed stubs are stale

protoc writes imports relative to its include root, so the .proto files are copied to
`forwardpass/protos/` under a temporary root: the stubs then import `forwardpass.protos.*`,
which is where the package installs them. Run it with grpcio-tools 1.81.x: its protobuf is the
oldest runtime we support, and generated code must not be newer than the runtime it meets.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTOS = ("model_config.proto", "grpc_service.proto")
REQUIRED_TOOLS = "1.81."


def generate(out_dir: Path) -> list[Path]:
    """Write the stubs into out_dir; returns their paths."""
    import grpc_tools
    from grpc_tools import protoc

    version = getattr(grpc_tools, "__version__", None) or _tools_version()
    if not version.startswith(REQUIRED_TOOLS):
        raise SystemExit(
            f"grpcio-tools {version} found; generate with {REQUIRED_TOOLS}x (pip install 'grpcio-tools~=1.81.1')"
        )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        package = root / "forwardpass" / "protos"
        package.mkdir(parents=True)
        for name in PROTOS:
            shutil.copy(HERE / name, package / name)
        include = str(Path(protoc.__file__).parent / "_proto")
        args = [
            "protoc",
            f"-I{root}",
            f"-I{include}",
            f"--python_out={root}",
            f"--pyi_out={root}",
            f"--grpc_python_out={root}",
            *(str(package / name) for name in PROTOS),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for path in sorted(package.glob("*_pb2*.py*")):
            shutil.copy(path, out_dir / path.name)
            written.append(out_dir / path.name)
        return written


def _tools_version() -> str:
    from importlib.metadata import version

    return version("grpcio-tools")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed stubs instead of writing")
    args = parser.parse_args()
    if not args.check:
        for path in generate(HERE):
            print(path.relative_to(HERE.parent))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        stale = [
            p.name
            for p in generate(Path(tmp))
            if not (HERE / p.name).exists() or (HERE / p.name).read_bytes() != p.read_bytes()
        ]
    if stale:
        print(f"stale generated stubs: {', '.join(stale)}; run make protos", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
