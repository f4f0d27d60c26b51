"""S3 benchmarks on a local SeaweedFS server (`weed server -s3`, loopback), medians of --repeat runs.

    python bench/bench_s3.py corpora [--work DIR] [--repeat N] [--only small,large] [--concurrency C]
    python bench/bench_s3.py bucket-size [--work DIR] [--repeat N] [--objects 100000]
    python bench/bench_s3.py https [--work DIR] [--repeat N] [--only small,large] [--concurrency C]

corpora: `replicate_bag` of a staged bag (BagIt 1.0, sha256 + md5 manifests, built once under
--work, default /tmp/strongroom-bench-s3) to an S3 target, against `rclone copy --checksum` and
`aws s3 sync` of the bag's payload folder to the same server:
  small: 20,000 files of 1-64 KiB (random sizes, 500 per folder);
  large: 4 files of 544 MiB (2.1 GiB): multipart uploads.
Every Strongroom object is sent with x-amz-checksum-sha256 and Content-MD5 (the server refuses
bytes that do not match), and then confirmed stored with its size and MD5 (a listing per 500
files, or a HEAD for multipart objects); "+ deep verify" also re-reads every object and re-hashes
it (`verify_replica`, as a deposit does after writing). rclone and aws run at their defaults and
with more parallel transfers; the faster of each is the baseline. Each repetition starts a fresh
server (fresh data folder) and gives every tool a fresh bucket, tools in rotating order.

https: the same replication + deep verify of a corpus to SeaweedFS over plain http and over
https (a certificate from a CA made for the run, given as the target's ca_bundle), with
`transport: auto` and `transport: boto3`, against `rclone copy --checksum` over https
(`--ca-cert`, AWS_CA_BUNDLE unset) and `aws s3 sync --ca-bundle`. One http and one https
server per repetition, fresh buckets, tools in rotating order.

bucket-size: time to replicate (and deep-verify) one small bag (20 files) into a bucket that
already holds 10 objects, then 100,000 objects (100 other bags of 1,000 files in the same
LIB/COLL, created with parallel PUTs), with the S3 requests made counted by operation.

rclone and awscli are not project dependencies: install them for the benchmark only, e.g.
    apt-get install -y rclone
    python3 -m venv /tmp/awsvenv && /tmp/awsvenv/bin/pip install awscli      (or pass --aws PATH)
rclone refuses to start while AWS_CA_BUNDLE is set: it is removed from rclone's environment.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_replicate import build_bag  # noqa: E402  (the same staged bag layout)

from strongroom.bag_id import BagId  # noqa: E402
from policies.config import Credentials  # noqa: E402
from storage_adapters.replicate import bag_inventory, replicate_bag, verify_replica  # noqa: E402
from storage_adapters.s3 import DEFAULT_CONCURRENCY, S3Adapter  # noqa: E402
from tests.seaweed import SeaweedServer  # noqa: E402

ALGS = ("sha256", "md5")
MiB = 1 << 20
CORPORA = {  # scale < 1 makes smaller corpora, for a quick try of the script
    "small": lambda rng, scale: [rng.randint(1024, 64 * 1024) for _ in range(int(20_000 * scale))],
    "large": lambda rng, scale: [int(544 * MiB * scale)] * 4,
}


def adapter_for(server: SeaweedServer, bucket: str, concurrency: int, name: str = "s3-bench", **kw) -> S3Adapter:
    if server.tls is not None:
        kw.setdefault("ca_bundle", str(server.ca_file))
    return S3Adapter(name, "bench", bucket=bucket, endpoint=server.endpoint, region=server.region, prefix="pres",
                     addressing_style="path", concurrency=concurrency,
                     credentials=Credentials(access_key=server.access_key, secret_key=server.secret_key), **kw)


def tool_env(server: SeaweedServer) -> Dict[str, str]:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret_key,
           "AWS_DEFAULT_REGION": server.region, "RCLONE_CONFIG_SW_TYPE": "s3", "RCLONE_CONFIG_SW_PROVIDER": "Other",
           "RCLONE_CONFIG_SW_ENV_AUTH": "true", "RCLONE_CONFIG_SW_ENDPOINT": server.endpoint,
           "RCLONE_CONFIG_SW_REGION": server.region, "RCLONE_CONFIG_SW_FORCE_PATH_STYLE": "true"}
    env.pop("AWS_CA_BUNDLE", None)  # rclone refuses to start with it; plain http here anyway
    return env


def run_tool(argv: List[str], env: Dict[str, str]) -> None:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")


def stage_corpus(work: Path, corpus: str, rng: random.Random, scale: float) -> tuple:
    """The staged bag of `corpus` (built once under `work`): (bag folder, files, bytes, payload
    folder, bag id, inventory)."""
    sizes = CORPORA[corpus](rng, scale)
    bag_dir = build_bag(work / (f"bag-{corpus}" + ("" if scale == 1 else f"-{scale}")), sizes)
    return (bag_dir, len(sizes), sum(sizes), str(bag_dir / "data"), BagId.parse(f"BENCH/{corpus}/20240101T000000Z-1"),
            bag_inventory(bag_dir))


def replicate_and_verify(adapter: S3Adapter, bag_dir: Path, bag_id: BagId, inventory, workers: int) -> Tuple[float, float]:
    """Seconds to replicate the bag (every object server-verified), and to replicate it and then
    re-read and re-hash every object (`verify_replica(deep=True)`, as a deposit does)."""
    start = time.perf_counter()
    result = replicate_bag(adapter, bag_dir, bag_id)
    mid = time.perf_counter()
    assert result.files_written == len(inventory.digests), result
    check = verify_replica(adapter, bag_id, inventory.digests, inventory.sizes, deep=True, workers=workers)
    end = time.perf_counter()
    assert check.ok, check.problems[:5]
    return mid - start, end - start


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


# --------------------------------------------------------------------------------------------
# corpora


def bench_corpora(args) -> None:
    rng = random.Random(1)
    work = Path(args.work)
    aws_dir = work / "aws-config"
    aws_dir.mkdir(parents=True, exist_ok=True)
    (aws_dir / "tuned").write_text(f"[default]\ns3 =\n  max_concurrent_requests = {args.tuned}\n")
    (aws_dir / "default").write_text("[default]\n")
    for corpus in args.only.split(","):
        bag_dir, files, size, payload, bag_id, inventory = stage_corpus(work, corpus, rng, args.scale)
        times: Dict[str, List[float]] = collections.defaultdict(list)
        notes: Dict[str, str] = {}

        def strongroom(server: SeaweedServer, bucket: str) -> None:
            adapter = adapter_for(server, bucket, args.concurrency)
            replicated, verified = replicate_and_verify(adapter, bag_dir, bag_id, inventory, args.concurrency)
            times["strongroom replicate_bag (server-verified)"].append(replicated)
            times["strongroom + deep verify (re-read all)"].append(verified)

        def rclone(transfers: int, checkers: int) -> Callable[[SeaweedServer, str], None]:
            label = f"rclone copy --checksum --transfers {transfers} --checkers {checkers}"

            def run(server: SeaweedServer, bucket: str) -> None:
                start = time.perf_counter()
                run_tool(["rclone", "copy", "-q", "--checksum", "--transfers", str(transfers), "--checkers",
                          str(checkers), payload, f"sw:{bucket}/pres"], tool_env(server))
                times[label].append(time.perf_counter() - start)
            return run

        def aws(config: str, label: str) -> Callable[[SeaweedServer, str], None]:
            def run(server: SeaweedServer, bucket: str) -> None:
                env = {**tool_env(server), "AWS_CONFIG_FILE": str(aws_dir / config)}
                start = time.perf_counter()
                run_tool([args.aws, "s3", "sync", "--only-show-errors", "--endpoint-url", server.endpoint,
                          payload, f"s3://{bucket}/pres"], env)
                times[label].append(time.perf_counter() - start)
            return run

        tools = [strongroom, rclone(4, 8), rclone(args.tuned, args.tuned), aws("default", "aws s3 sync (10 requests)"),
                 aws("tuned", f"aws s3 sync ({args.tuned} requests)")]
        for rep in range(args.repeat):
            data_dir = work / f"weed-{corpus}"
            shutil.rmtree(data_dir, ignore_errors=True)
            with SeaweedServer(data_dir) as server:
                order = tools[rep % len(tools):] + tools[:rep % len(tools)]
                for tool in order:
                    bucket = server.make_bucket()
                    os.sync()
                    tool(server, bucket)
                notes[f"rep {rep + 1} load average"] = load_average()
            shutil.rmtree(data_dir, ignore_errors=True)
            print(f"# {corpus} rep {rep + 1}: " + ", ".join(f"{k}: {v[-1]:.1f}s" for k, v in times.items()),
                  file=sys.stderr, flush=True)
        report(corpus, files, size, times, notes, args)


# --------------------------------------------------------------------------------------------
# https vs http


def bench_https(args) -> None:
    from tests.tls import CertificateAuthority

    rng = random.Random(1)
    work = Path(args.work)
    ca = CertificateAuthority.create(work / "tls")
    cert = ca.issue("server")
    for corpus in args.only.split(","):
        bag_dir, files, size, payload, bag_id, inventory = stage_corpus(work, corpus, rng, args.scale)
        times: Dict[str, List[float]] = collections.defaultdict(list)
        notes: Dict[str, str] = {}

        def strongroom(https: bool, transport: str) -> Callable[[Dict[bool, SeaweedServer]], None]:
            label = f"strongroom {'https' if https else 'http'} transport {transport} + deep verify"

            def run(servers: Dict[bool, SeaweedServer]) -> None:
                server = servers[https]
                adapter = adapter_for(server, server.make_bucket(), args.concurrency,
                                      direct_put=transport == "auto")
                os.sync()
                replicated, verified = replicate_and_verify(adapter, bag_dir, bag_id, inventory, args.concurrency)
                times[label.replace(" + deep verify", " replicate only")].append(replicated)
                times[label].append(verified)
            return run

        def rclone(transfers: int) -> Callable[[Dict[bool, SeaweedServer]], None]:
            label = f"rclone https copy --checksum --transfers {transfers} --checkers {transfers}"

            def run(servers: Dict[bool, SeaweedServer]) -> None:
                server = servers[True]
                bucket = server.make_bucket()
                os.sync()
                start = time.perf_counter()
                run_tool(["rclone", "copy", "-q", "--checksum", "--ca-cert", str(ca.cert), "--transfers",
                          str(transfers), "--checkers", str(transfers), payload, f"sw:{bucket}/pres"],
                         tool_env(server))
                times[label].append(time.perf_counter() - start)
            return run

        def aws(requests: int) -> Callable[[Dict[bool, SeaweedServer]], None]:
            label = f"aws s3 sync https ({requests} requests)"
            config = work / f"aws-config-{requests}"
            config.write_text(f"[default]\ns3 =\n  max_concurrent_requests = {requests}\n")

            def run(servers: Dict[bool, SeaweedServer]) -> None:
                server = servers[True]
                bucket = server.make_bucket()
                env = {**tool_env(server), "AWS_CONFIG_FILE": str(config)}
                os.sync()
                start = time.perf_counter()
                run_tool([args.aws, "s3", "sync", "--only-show-errors", "--endpoint-url", server.endpoint,
                          "--ca-bundle", str(ca.cert), payload, f"s3://{bucket}/pres"], env)
                times[label].append(time.perf_counter() - start)
            return run

        tools = [strongroom(False, "auto"), strongroom(True, "auto"), strongroom(True, "boto3"), rclone(4),
                 rclone(args.tuned)]
        if args.aws:
            tools += [aws(10), aws(args.tuned)]
        for rep in range(args.repeat):
            dirs = {https: work / f"weed-{corpus}-{'https' if https else 'http'}" for https in (False, True)}
            for folder in dirs.values():
                shutil.rmtree(folder, ignore_errors=True)
            servers = {False: SeaweedServer(dirs[False]).start(),
                       True: SeaweedServer(dirs[True], tls=cert, ca_file=ca.cert).start()}
            try:
                for tool in tools[rep % len(tools):] + tools[:rep % len(tools)]:
                    tool(servers)
            finally:
                for server in servers.values():
                    server.stop()
            notes[f"rep {rep + 1} load average"] = load_average()
            for folder in dirs.values():
                shutil.rmtree(folder, ignore_errors=True)
            print(f"# {corpus} rep {rep + 1}: " + ", ".join(f"{k}: {v[-1]:.1f}s" for k, v in times.items()),
                  file=sys.stderr, flush=True)
        report(corpus, files, size, times, notes, args)


def report(corpus: str, files: int, size: int, times: Dict[str, List[float]], notes: Dict[str, str], args) -> None:
    medians = {k: statistics.median(v) for k, v in times.items()}
    baselines = {k: v for k, v in medians.items() if not k.startswith("strongroom")}
    fastest = min(baselines.values())
    print(f"\n### {corpus}: {files:,} files, {size / MiB:,.0f} MiB (median of {args.repeat}; "
          f"Strongroom concurrency {args.concurrency})\n")
    print("| tool | seconds | files/s | MB/s | vs fastest baseline |")
    print("|---|---:|---:|---:|---:|")
    for label, secs in medians.items():
        print(f"| {label} | {secs:.1f} | {files / secs:,.0f} | {size / secs / 1e6:,.1f} | {fastest / secs:.2f}x |")
    for k, v in notes.items():
        print(f"\n{k}: {v}", end="")
    print()
    print(json.dumps({"corpus": corpus, "files": files, "bytes": size, "runs": times}), file=sys.stderr)


# --------------------------------------------------------------------------------------------
# bucket size


def fill(server: SeaweedServer, bucket: str, keys: List[str]) -> float:
    client = server.client(retries=4)
    start = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=bucket, Key=k, Body=b"x"), keys))
    return time.perf_counter() - start


def bench_bucket_size(args) -> None:
    work = Path(args.work)
    rng = random.Random(3)
    sizes = [rng.randint(1024, 64 * 1024) for _ in range(20)]
    bag_dir = build_bag(work / "bag-tiny", sizes)
    inventory = bag_inventory(bag_dir)
    data_dir = work / "weed-bucket-size"
    shutil.rmtree(data_dir, ignore_errors=True)
    rows = []
    with SeaweedServer(data_dir) as server:
        bucket = server.make_bucket()
        # other bags in the same LIB/COLL as the measured ones: 1,000 objects each
        others = [f"pres/BENCH/big/20230101T000000Z-{b + 1}/data/f{n:04d}.bin"
                  for b in range(args.objects // 1000 + 1) for n in range(1000)]
        held = 0
        for target in (10, args.objects):
            seconds = fill(server, bucket, others[held:target])
            held = target
            print(f"# bucket holds {target:,} other objects (filled in {seconds:.0f}s)", file=sys.stderr, flush=True)
            timings, ops = [], collections.Counter()
            for rep in range(args.repeat):
                adapter = adapter_for(server, bucket, args.concurrency)
                counted: collections.Counter = collections.Counter()
                adapter.client.meta.events.register("before-call.s3",
                                                    lambda model, counted=counted, **kw: counted.update([model.name]))
                adapter.ensure_bucket()
                if adapter._direct is not None:  # requests sent without the boto3 client: count them too
                    sent = adapter._direct._send

                    def counting(method, key, query, body, headers, operation, *rest, sent=sent, counted=counted,
                                 **kw):
                        counted.update([operation])
                        return sent(method, key, query, body, headers, operation, *rest, **kw)

                    adapter._direct._send = counting
                bag_id = BagId.parse(f"BENCH/big/20240101T000000Z-{rep + 1 + (0 if target == 10 else 1000)}")
                start = time.perf_counter()
                replicate_bag(adapter, bag_dir, bag_id)
                check = verify_replica(adapter, bag_id, inventory.digests, inventory.sizes, deep=True, workers=8)
                timings.append(time.perf_counter() - start)
                assert check.ok, check.problems
                ops = counted
            rows.append((target, statistics.median(timings), dict(sorted(ops.items()))))
    print(f"\n### one bag of {len(sizes)} files (+ tag files) replicated and deep-verified "
          f"(median of {args.repeat})\n")
    print("| objects already in the bucket | seconds | S3 requests for the bag |")
    print("|---:|---:|---|")
    for target, secs, ops in rows:
        print(f"| {target:,} | {secs:.2f} | {', '.join(f'{k} {v}' for k, v in ops.items())} |")
    print(f"\nload average at the end: {load_average()}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["corpora", "bucket-size", "https"])
    parser.add_argument("--work", default="/tmp/strongroom-bench-s3")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="small,large")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--tuned", type=int, default=16, help="parallel transfers for the tuned rclone/aws runs")
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--aws", default="/tmp/awsvenv/bin/aws" if os.path.exists("/tmp/awsvenv/bin/aws")
                        else shutil.which("aws"))
    parser.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(4096, hard)), hard))
    if args.what == "corpora":
        bench_corpora(args)
    elif args.what == "https":
        bench_https(args)
    else:
        bench_bucket_size(args)


if __name__ == "__main__":
    main()
