"""`strongroom receive` from a SeaweedFS receiving bucket vs `strongroom deposit` of the same
files from a local folder.

    python bench/bench_receive.py [--files N ...] [--work DIR] [--only local,tar,loose]

For each N (default 20,000): a corpus of N small files (1-4 KiB random bytes, 100 folders),
then three fresh archives with the same config (two filesystem replicas, virus_check: off, the
catalog in a folder; the library's receiving area a SeaweedFS bucket reached with an identity
allowed only that bucket):
  local: `strongroom deposit CORPUS` (the baseline);
  tar:   the corpus uploaded as one `batch.tar` + `.ready` (not timed: the library's side), then
         `strongroom receive` timed (stream the tar once, unpack, deposit, answer, remove uploads);
  loose: the corpus uploaded as N objects (not timed), then `strongroom receive` timed.
Wall time and peak RSS of the strongroom process come from /usr/bin/time -v. Prints a Markdown
table with the ratio to the local deposit.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.seaweed import SeaweedServer  # noqa: E402

BUCKET = "recv-bench"
KEY_ENV, SECRET_ENV = "SR_BENCH_RECV_KEY", "SR_BENCH_RECV_SECRET"


def build_corpus(root: Path, count: int) -> None:
    marker = root.parent / f"{root.name}.complete"
    if marker.exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(count)
    for i in range(count):
        p = root / f"d{i % 100:02d}" / f"f{i:06d}.dat"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.randbytes(rng.randint(1024, 4096)))
    marker.touch()


def write_archive(folder: Path, server: SeaweedServer) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "policies").mkdir(parents=True)
    for sub in ("a", "b"):
        (folder / "replicas" / sub).mkdir(parents=True)
    (folder / "strongroom.yaml").write_text(f"""\
catalog: ./catalog
staging: ./staging
policies: ./policies
storage:
  a: {{type: filesystem, root: ./replicas/a, site: one}}
  b: {{type: filesystem, root: ./replicas/b, site: two}}
libraries:
  BEN:
    name: {{en: Bench Library, zh: 测试图书馆}}
    receiving:
      type: s3
      endpoint: {server.endpoint}
      bucket: {BUCKET}
      region: us-east-1
      credentials: {{access_key_env: {KEY_ENV}, secret_key_env: {SECRET_ENV}}}
""")
    (folder / "policies" / "self-built.yaml").write_text(
        "name: self-built\nchecksums: [sha256, md5]\nreplicas: [a, b]\nvirus_check: off\n")
    (folder / "policies" / "at-risk-purchased.yaml").write_text(
        "name: at-risk-purchased\nchecksums: [sha256, md5]\nreplicas: [a, b]\nvirus_check: off\n")
    return folder / "strongroom.yaml"


def timed(argv, env) -> tuple:
    """(wall seconds, peak RSS MiB) of one strongroom run, from /usr/bin/time -v."""
    proc = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "pipelines", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)", proc.stderr)
    h, m, s = (float(x or 0) for x in wall.groups())
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return h * 3600 + m * 60 + s, rss / 1024


def empty_bucket(client) -> None:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        keys = [{"Key": o["Key"]} for o in page.get("Contents") or ()]
        if keys:
            client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, nargs="+", default=[20_000])
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "strongroom-bench-receive"))
    ap.add_argument("--only", default="local,tar,loose")
    opts = ap.parse_args()
    work = Path(opts.work)
    work.mkdir(parents=True, exist_ok=True)
    kinds = opts.only.split(",")
    shutil.rmtree(work / "seaweed", ignore_errors=True)  # a fresh server: the identities file is written at start
    server = SeaweedServer(work / "seaweed")
    keys = server.add_identity("bench", [f"{a}:{BUCKET}" for a in ("Read", "Write", "List")])
    server.start()
    rows = []
    try:
        server.make_bucket(BUCKET)
        lib = server.client(keys=keys)
        env = {**os.environ, KEY_ENV: keys[0], SECRET_ENV: keys[1]}
        for n in opts.files:
            corpus = work / f"corpus-{n}"
            build_corpus(corpus, n)
            files = sorted(p for p in corpus.rglob("*") if p.is_file())
            size = sum(p.stat().st_size for p in files)
            base = None
            for kind in kinds:
                config = write_archive(work / f"archive-{kind}", server)
                empty_bucket(server.client())
                if kind == "local":
                    argv = ["--config", str(config), "deposit", str(corpus), "--library", "BEN",
                            "--collection", "local", "--type", "self-built"]
                else:
                    if kind == "tar":
                        buf = io.BytesIO()
                        with tarfile.open(fileobj=buf, mode="w") as tar:
                            tar.add(corpus, arcname=".")
                        lib.put_object(Bucket=BUCKET, Key=f"{kind}/b1/batch.tar", Body=buf.getvalue())
                    else:
                        def put(p: Path) -> None:
                            lib.put_object(Bucket=BUCKET, Key=f"{kind}/b1/{p.relative_to(corpus).as_posix()}",
                                           Body=p.read_bytes())

                        with ThreadPoolExecutor(16) as pool:
                            list(pool.map(put, files))
                    lib.put_object(Bucket=BUCKET, Key=f"{kind}/b1.ready", Body=b"type: self-built\n")
                    argv = ["--config", str(config), "receive", "--library", "BEN"]
                wall, rss = timed(argv, env)
                if kind == "local":
                    base = wall
                rows.append((n, size, kind, wall, rss, None if base is None else wall / base))
                print(f"{n} files {kind}: {wall:.1f} s, {rss:.0f} MiB", file=sys.stderr, flush=True)
    finally:
        server.stop()
    print("| files | bytes | run | wall s | peak RSS MiB | vs local deposit |")
    print("|---:|---:|---|---:|---:|---:|")
    for n, size, kind, wall, rss, ratio in rows:
        print(f"| {n:,} | {size:,} | {kind} | {wall:.1f} | {rss:.0f} | {'' if ratio is None else f'{ratio:.2f}x'} |")


if __name__ == "__main__":
    main()
