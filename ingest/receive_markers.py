"""The marker files of a receiving area: what a library's `.ready` may say, and the `.done` and
`.failed` answers the archive writes back (YAML, English and Chinese, for a librarian).

Why plain functions on text: markers are written by outsiders with any S3 client, so reading
one is parsing untrusted input (size-capped, YAML safe_load, every key and value checked, every
problem named); the answers are read by people, so they say what happened and what to do in
words, in both languages, and never carry a credential or a path of the archive's machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Dict, Iterable, List, Optional

import yaml

from strongroom.bagit_spec import path_problem
from strongroom.bag_id import check_code, check_title
from strongroom.errors import StrongroomError

READY, DONE, FAILED, CLAIM = ".ready", ".done", ".failed", ".claim"
MARKER_LIMIT = 64 * 1024
TYPES = ("purchased", "self-built")
READY_KEYS = ("type", "title", "policy", "library", "collection")
_BATCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


@dataclass(frozen=True)
class Batch:
    """One upload: `COLLECTION/BATCH/...` announced by `COLLECTION/BATCH.ready`."""

    collection: str
    name: str

    @property
    def prefix(self) -> str:
        return f"{self.collection}/{self.name}/"

    def marker(self, suffix: str) -> str:
        return f"{self.collection}/{self.name}{suffix}"

    def __str__(self) -> str:
        return f"{self.collection}/{self.name}"


@dataclass(frozen=True)
class ReadyNote:
    """What the library asked for in its `.ready`."""

    collection_type: str
    title: str = ""
    policy: Optional[str] = None


@dataclass
class Found:
    """The batches announced in an area, and the `.ready` keys that cannot name one."""

    batches: List[Batch] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)


def find_batches(keys: Iterable[str]) -> Found:
    """Every batch announced by a `COLLECTION/BATCH.ready` among `keys`, or still claimed by a
    `.claim` (a run killed while cleaning up after its answer: the rerun finishes it). A `.ready`
    at another depth or with a name that is no collection code / batch name is listed in
    `ignored` with the reason."""
    found = Found()
    seen = set()
    for key in sorted(keys):
        suffix = READY if key.endswith(READY) else CLAIM if key.endswith(CLAIM) else None
        if suffix is None or key.startswith("reports/"):
            continue
        problem = path_problem(key)
        parts = key.split("/")
        if problem is None and len(parts) != 2:
            problem = f"a {suffix} must sit at COLLECTION/BATCH{suffix}"
        if problem is None:
            collection, name = parts[0], parts[1][: -len(suffix)]
            try:
                check_code(collection, "collection")
            except StrongroomError as exc:
                problem = exc.message
            else:
                if not _BATCH.match(name):
                    problem = (f"{name!r} is not a batch name: use 1-128 ASCII letters, digits, '.', '_' or '-', "
                               f"starting with a letter or digit")
        if problem:
            if suffix == READY:
                found.ignored.append(f"{key}: {problem}")
        elif (collection, name) not in seen:
            seen.add((collection, name))
            found.batches.append(Batch(collection, name))
    return found


def parse_ready(data: bytes, batch: Batch, library: str) -> ReadyNote:
    """The `.ready` note, or ReadyError listing every problem (in English and Chinese)."""
    problems: List[Problem] = []
    try:
        doc = yaml.safe_load(data.decode("utf-8")) if data.strip() else None
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ReadyError([Problem(f"{batch.marker(READY)} is not readable YAML text ({type(exc).__name__})",
                                  f"{batch.marker(READY)} 不是可读的 YAML 文本")]) from None
    if not isinstance(doc, dict):
        raise ReadyError([Problem(f"{batch.marker(READY)} must be a YAML mapping with at least 'type: purchased' "
                                  f"or 'type: self-built'",
                                  f"{batch.marker(READY)} 须为 YAML 映射，至少写明 type: purchased 或 type: self-built")])
    for key in doc:
        if key not in READY_KEYS:
            problems.append(Problem(f"unknown key {key!r} in {batch.marker(READY)} (allowed: {', '.join(READY_KEYS)})",
                                    f"{batch.marker(READY)} 中有未知的键 {key!r}（允许：{', '.join(READY_KEYS)}）"))
    kind = doc.get("type")
    if kind not in TYPES:
        problems.append(Problem(f"type must be purchased or self-built, not {kind!r}",
                                f"type 须为 purchased（购买）或 self-built（自建），而不是 {kind!r}"))
    if "library" in doc and str(doc["library"]) != library:
        problems.append(Problem(f"the batch names library {doc['library']!r}, but it was uploaded to the receiving "
                                f"area of {library}: a library can deposit only for itself",
                                f"该批次写明的图书馆是 {doc['library']!r}，但它上传到了 {library} 的接收区："
                                f"图书馆只能为自己提交"))
    if "collection" in doc and str(doc["collection"]) != batch.collection:
        problems.append(Problem(f"the batch names collection {doc['collection']!r}, but it sits under "
                                f"{batch.collection}/: a batch deposits into the collection folder it is in",
                                f"该批次写明的馆藏是 {doc['collection']!r}，但它位于 {batch.collection}/ 之下："
                                f"批次只能提交到其所在的馆藏文件夹"))
    title = doc.get("title", "")
    if not isinstance(title, str):
        problems.append(Problem("title must be text", "title 须为文本"))
        title = ""
    else:
        try:
            check_title(title)
        except StrongroomError as exc:
            problems.append(Problem(f"title: {exc.message}", f"标题无法保存：{exc.message}"))
    policy = doc.get("policy")
    if policy is not None and not isinstance(policy, str):
        problems.append(Problem("policy must be a policy name", "policy 须为策略名称"))
    if problems:
        raise ReadyError(problems)
    return ReadyNote(collection_type=kind, title=title, policy=policy)


@dataclass(frozen=True)
class Problem:
    """One problem, said twice: for the librarian in English and in Chinese."""

    en: str
    zh: str


class ReadyError(Exception):
    """The `.ready` cannot be acted on; the batch gets a `.failed` naming every problem."""

    def __init__(self, problems: List[Problem]):
        self.problems = problems
        super().__init__("; ".join(p.en for p in problems))


def now_text() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def done_document(batch: Batch, library: str, bags: List[Dict], *, kept: bool) -> bytes:
    """`COLLECTION/BATCH.done`: what was preserved and where the library's reports appear."""
    files = sum(int(b.get("files", 0)) for b in bags)
    size = sum(int(b.get("bytes", 0)) for b in bags)
    doc = {
        "batch": str(batch), "library": library, "state": "preserved", "received_at": now_text(),
        "bags": [b["id"] for b in bags], "files": files, "bytes": size,
        "reports": "reports/",
        "uploads": "kept in the receiving area" if kept else "removed from the receiving area",
        "en": f"Preserved {files} file(s), {size:,} bytes, as {len(bags)} bag(s): "
              f"{', '.join(b['id'] for b in bags)}. Every file was checked against its checksums and copied to "
              f"every storage site of the policy. Your reports appear under reports/ in this area.",
        "zh": f"已保存 {files} 个文件（{size:,} 字节），共 {len(bags)} 个包：{', '.join(b['id'] for b in bags)}。"
              f"每个文件均已核对校验值，并复制到策略规定的每个存储站点。报告见本接收区的 reports/ 目录。",
    }
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False).encode("utf-8")


def failed_document(batch: Batch, library: str, what: Problem, problems: List[Problem]) -> bytes:
    """`COLLECTION/BATCH.failed`: every problem in words a librarian understands, and what to do."""
    doc = {
        "batch": str(batch), "library": library, "state": "failed", "checked_at": now_text(),
        "en": f"{what.en}. Nothing of this batch was preserved; the uploaded files are left as they are. "
              f"Fix the problems below, upload the batch again under a new batch name (or remove this "
              f".failed file), then upload its .ready again.",
        "zh": f"{what.zh}。本批次未保存任何内容；已上传的文件保持原样。请修正下列问题，以新的批次名称重新上传"
              f"（或删除此 .failed 文件），然后重新上传其 .ready 文件。",
        "problems": [{"en": p.en, "zh": p.zh} for p in problems[:1000]],
    }
    if len(problems) > 1000:
        doc["more_problems"] = len(problems) - 1000
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False).encode("utf-8")
