"""Copy the ALTCHA widget from its npm package into newsletter/static/altcha/ (run by hand when
upgrading; the tool never downloads anything at run time).

    python tools/vendor_altcha.py 3.2.2

It runs 'npm pack altcha@VERSION' (the npm registry), checks the tarball's integrity against
the registry's, and copies the main bundle (styles and workers inside, a classic script that
needs no CORS), the Norwegian and English texts, and the licence. SOURCE.txt records the version
and the SHA-256 of each file; tests/test_signup_form.py checks them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

TARGET = Path(__file__).resolve().parent.parent / "newsletter" / "static" / "altcha"
FILES = {
    "package/dist/main/altcha.umd.min.cjs": "altcha.min.js",
    "package/dist/i18n/nb.umd.cjs": "altcha-nb.js",
    "package/dist/i18n/en.umd.cjs": "altcha-en.js",
    "package/LICENSE.txt": "LICENSE.txt",
}


def main(version: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        packed = subprocess.run(
            ["npm", "pack", f"altcha@{version}", "--json"], cwd=folder, check=True, capture_output=True, text=True
        )
        info = json.loads(packed.stdout)[0]
        tarball = Path(folder) / info["filename"]
        algorithm, _, expected = info["integrity"].partition("-")
        digest = base64.b64encode(hashlib.new(algorithm, tarball.read_bytes()).digest()).decode()
        if digest != expected:
            sys.exit(f"{tarball.name}: integrity {algorithm} does not match the registry's")
        TARGET.mkdir(parents=True, exist_ok=True)
        lines = [f"altcha {version} from the npm registry ({info['integrity']}), MIT licence.", ""]
        with tarfile.open(tarball) as archive:
            for member, name in FILES.items():
                data = archive.extractfile(member).read()  # type: ignore[union-attr]
                (TARGET / name).write_bytes(data)
                lines.append(f"{hashlib.sha256(data).hexdigest()}  {name}")
        (TARGET / "SOURCE.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "3.2.2")
