"""How much a file create costs on this file system right after many files were deleted.

    python bench/fs_create_recency.py [--work DIR] [--deleted 20000] [--created 3000]

Why (session 25, issue 11): on an ext4 mounted without a journal (`dmesg`: "mounted filesystem
... without journal"), the inode allocator never hands out an inode freed less than 60 s ago,
or 360 s ago while its inode table block is dirty (a create in that block makes it dirty
again): `find_inode_bit` steps past every such inode, one buffer-cache look-up each
(`recently_deleted`; `perf record -g` shows it as most of the kernel time of
`openat(O_CREAT)`). For minutes after `rm -rf` of a big tree a create costs several times its
usual price. bench/bench_ingest.py therefore deletes nothing
inside a round (see its class Trash); this script shows the effect on its own:

  1. after a quiet minute (`sync`, 61 s): N creates;
  2. create `--deleted` files, `sync`, delete them, `sync`: N creates at once;
  3. wait 61 s: N creates again (the blocks step 2 dirtied may still be dirty: up to 360 s);
  4. `sync`, wait 61 s: N creates again.

Each create is open(O_CREAT | O_EXCL), a 4 KiB write and close, in one fresh folder per step.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from pathlib import Path

QUIET_S = 61.0


def creates(folder: Path, count: int) -> float:
    """Microseconds per create of `count` new files in a new `folder`."""
    folder.mkdir(parents=True)
    dfd = os.open(folder, os.O_RDONLY)
    block = b"x" * 4096
    try:
        started = time.perf_counter()
        for i in range(count):
            fd = os.open(f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dfd)
            os.write(fd, block)
            os.close(fd)
        return (time.perf_counter() - started) / count * 1e6
    finally:
        os.close(dfd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/strongroom-bench/create-recency")
    ap.add_argument("--deleted", type=int, default=20000)
    ap.add_argument("--created", type=int, default=3000)
    args = ap.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        subprocess.run(["sync"], check=True)
        time.sleep(QUIET_S)
        print(f"quiet file system:                  {creates(work / 'quiet', args.created):7.1f} us per create",
              flush=True)
        creates(work / "doomed", args.deleted)
        subprocess.run(["sync"], check=True)
        shutil.rmtree(work / "doomed")
        subprocess.run(["sync"], check=True)
        print(f"right after deleting {args.deleted:,} files: {creates(work / 'after', args.created):7.1f} us "
              "per create", flush=True)
        time.sleep(QUIET_S)
        print(f"{QUIET_S:.0f} s later:                         {creates(work / 'later', args.created):7.1f} us "
              "per create", flush=True)
        subprocess.run(["sync"], check=True)
        time.sleep(QUIET_S)
        print(f"after sync and {QUIET_S:.0f} s more:            {creates(work / 'synced', args.created):7.1f} us "
              "per create", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
