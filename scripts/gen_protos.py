"""Compile every ``proto/tally/v1/*.proto`` into the generated package ``tally._generated``.

    python scripts/gen_protos.py

Writes ``services/tally/_generated/<name>_pb2.py``, ``<name>_pb2.pyi`` (types) and
``<name>_pb2_grpc.py`` for each proto, with imports between generated modules
rewritten to be relative, so they import as ``tally._generated.<name>_pb2``.  The
directory is build output: it is gitignored and recreated by ``make install``.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto" / "tally" / "v1"
OUT_DIR = ROOT / "services" / "tally" / "_generated"

_ABSOLUTE_IMPORT = re.compile(r"^import (\w+_pb2)( as \w+)?$", re.MULTILINE)


def generate(proto_dir: Path = PROTO_DIR, out_dir: Path = OUT_DIR) -> list[Path]:
    """Compile the protos; returns the generated files.  Raises on a protoc error."""
    from grpc_tools import protoc  # build-time dependency (grpcio-tools)

    protos = sorted(proto_dir.glob("*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files under {proto_dir}")
    include = Path(protoc.__file__).resolve().parent / "_proto"
    with tempfile.TemporaryDirectory() as scratch:
        args = [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"-I{include}",
            f"--python_out={scratch}",
            f"--pyi_out={scratch}",
            f"--grpc_python_out={scratch}",
            *[str(p) for p in protos],
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed (see above)")
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in out_dir.glob("*_pb2*.py*"):
            stale.unlink()
        written = []
        for source in sorted(Path(scratch).iterdir()):
            text = _ABSOLUTE_IMPORT.sub(r"from . import \1\2", source.read_text())
            target = out_dir / source.name
            target.write_text(text)
            written.append(target)
    init = out_dir / "__init__.py"
    init.write_text('"""Generated from proto/tally/v1 by scripts/gen_protos.py; do not edit."""\n')
    typed = out_dir / "py.typed"
    typed.touch()
    cache = out_dir / "__pycache__"
    if cache.exists():
        shutil.rmtree(cache)
    return [init, *written]


def main() -> int:
    files = generate()
    print(f"generated {len(files)} files in {OUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
