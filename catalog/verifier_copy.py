"""A copy of the stdlib-only verifier in every storage target, beside the ledger checkpoints.

Whoever holds a copy of the storage (a successor archive, an auditor, a library taking its
content away) then also holds the means to check it, without Strongroom, its catalog or even
this repository. The script is stored under a name that carries its own digest
(`verifier/strongroom-verify-<sha256 prefix>.py`), so a newer Strongroom adds its version beside
the older ones instead of overwriting evidence an auditor may already have used, and the
README beside it says how to run it, in English and Chinese.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import List

import strongroom
from storage_adapters.base import PutOutcome, StorageAdapter

FOLDER = "verifier/"
SCRIPT = Path(strongroom.__file__).resolve().parent / "offline_verify.py"

README = """\
strongroom-verify: check this storage without Strongroom
=========================================================

This folder holds a single Python 3 script that needs nothing but the standard library. Copy
the whole target (a folder, or an S3 bucket prefix copied with e.g. `aws s3 sync` or `rclone
copy`) and run, from the folder that holds `.strongroom/`:

    python3 -I .strongroom/verifier/strongroom-verify-<digest>.py target .
    python3 -I .strongroom/verifier/strongroom-verify-<digest>.py bag LIB/COLL/BAG
    python3 -I .strongroom/verifier/strongroom-verify-<digest>.py ledger . [OTHER_TARGET ...]

`target` re-hashes every file of every bag against its BagIt manifests and re-checks the chain
of ledger checkpoints in `.strongroom/ledger/checkpoints/`. Exit 0: intact; 1: a problem was
found (each printed, naming the file); 2: a wrong command line. The file name carries the first
16 hex digits of the script's SHA-256: check it with `sha256sum` first. The full procedure is
docs/verify-by-hand.md in the Strongroom repository.

strongroom-verify：不依赖 Strongroom 校验本存储
================================================

本文件夹中的脚本只需要 Python 3 标准库。将整个存储目标（一个文件夹，或用 `aws s3 sync`、
`rclone copy` 复制下来的 S3 前缀）复制到本地，在包含 `.strongroom/` 的文件夹中运行：

    python3 -I .strongroom/verifier/strongroom-verify-<摘要>.py target .

`target` 按 BagIt 清单重新计算每个包中每个文件的摘要，并重新检查
`.strongroom/ledger/checkpoints/` 中的账本检查点链。退出码 0：完好；1：发现问题（逐条列出
并指明文件）；2：命令行有误。文件名含脚本 SHA-256 的前 16 位十六进制数字，请先用
`sha256sum` 核对。完整步骤见 Strongroom 代码库中的 docs/verify-by-hand.zh.md。
"""


def script_bytes() -> bytes:
    return SCRIPT.read_bytes()


def script_key(data: bytes) -> str:
    return f"{FOLDER}strongroom-verify-{hashlib.sha256(data).hexdigest()[:16]}.py"


def readme_key() -> str:
    # The README names no digest, so it too is written once per text: a changed text gets a new name.
    return f"{FOLDER}README-{hashlib.sha256(README.encode('utf-8')).hexdigest()[:16]}.txt"


def ensure_verifier(adapter: StorageAdapter) -> List[PutOutcome]:
    """Write the script and its README into `adapter` unless the same bytes are there already."""
    data = script_bytes()
    return [adapter.put_record(script_key(data), data),
            adapter.put_record(readme_key(), README.encode("utf-8"))]
