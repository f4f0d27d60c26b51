"""Chinese renderings of the detail texts Strongroom itself writes into events and copy records.

Details are stored in English (the ledger is one language, and its hashes cover the text), and
the English reports show them as they are. The Chinese reports render the phrases the code
generates (deposits, audits, repairs, open damage) through the table below: each rule is a
regular expression over one phrase and a replacement that keeps the data it captured (paths,
counts, targets, digests) exactly as written; byte counts are written as every size in the
reports is (policies.units.display_size). What no rule knows, a message from another tool or a
person's text, is shown as it is, so nothing is lost or guessed.
"""

from __future__ import annotations

import re
from typing import Callable, List, Match, Tuple, Union

from policies.units import display_size

Replacement = Union[str, Callable[[Match], str]]


def _size(group: int) -> Callable[[Match], str]:
    return lambda m: display_size(int(m.group(group)))


_AUDIT_KIND = {"deep": "深度审计", "quick": "快速审计", "comparison": "比对审计"}
_AUDIT_OUTCOME = {"success": "通过", "failure": "未通过", "repaired": "已修复", "inconclusive": "无定论"}

RULES: List[Tuple[str, Replacement]] = [
    # audits (fixity.audit_record, fixity.open_detail)
    (r"\baudit \((deep|quick|comparison)\)(?:: (success|failure|repaired|inconclusive))?(: )?",
     lambda m: _AUDIT_KIND[m.group(1)] + (f"：{_AUDIT_OUTCOME[m.group(2)]}" if m.group(2) else "")
     + ("：" if m.group(3) else "")),
    (r"\b(\d+) files, (\d+) bytes re-read and matched", lambda m: f"重新读取 {m.group(1)} 个文件（"
     f"{display_size(int(m.group(2)))}），全部吻合"),
    (r"\b(\d+) files, (\d+) bytes re-read", lambda m: f"重新读取 {m.group(1)} 个文件（{display_size(int(m.group(2)))}）"),
    (r"\b(\d+) files present with the expected sizes checked", r"检查了 \1 个文件：均在且大小正确"),
    (r"\b(\d+) damaged: ", r"\1 处损坏："),
    (r"\b(\d+) remain damaged", r"仍有 \1 处损坏"),
    (r"\b(\d+) of (\d+) repair\(s\) succeeded", r"\2 次修复中 \1 次成功"),
    (r"\b(\d+) could not be read: ", r"\1 处无法读取："),
    (r"\b(\d+) file\(s\) repaired while other copies were audited", r"审计其他副本时修复了 \1 个文件"),
    (r"\b(\d+) repair\(s\) made from good copies and re-verified", r"已用完好副本修复 \1 处并重新校验"),
    (r"checksum mismatch \((\w+) expected (\w+), found (\w+)\)", r"校验值不符（\1 应为 \2，实为 \3）"),
    (r"\bsize (\d+), expected (\d+)", r"大小为 \1，应为 \2"),
    (r"(\S+) is not stored\b", r"\1 未存储"),
    (r" \(a quick check cannot clear damage it cannot see\)", "（快速审计看不到内容损坏，不能解除它）"),
    (r" \(this check could not clear it\)", "（本次检查未能解除它）"),
    (r"\bStill open: ", "仍未解决："),
    (r"\bOpen since (\d{4}-\d\d-\d\dT[0-9:.]+(?:[+-]\d\d:\d\d|Z)?)", r"自 \1 起未解决"),
    # repairs (fixity.repairer)
    (r"\brepair: replaced with the copy from (\S+) \((\d+) bytes, ([^)]*)\), verified while copying and "
     r"re-verified after", lambda m: f"修复：已用 {m.group(1)} 上的副本替换（{display_size(int(m.group(2)))}，"
     f"{m.group(3)}），复制时已校验，复制后再次校验"),
    (r"\brepair: no good copy could be copied \(sources tried: ([^)]*)\)", r"修复：没有可复制的完好副本（已尝试：\1）"),
    (r"\brepair: extra file removed \(([^)]*)\)", r"修复：已删除多余文件（\1）"),
    (r"\brepair: extra file moved aside to (\S+) \(([^)]*)\)", r"修复：已将多余文件移至 \1（\2）"),
    (r"\brepair: the extra file is already gone", "修复：多余文件已不存在"),
    (r"\brepair: ", "修复："),
    # deposits (pipelines.flow)
    (r"^copied to (.+) \(([^()]+)\)$", r"已复制到 \1（\2）"),
    (r"\bdeep verification after writing: (\d+) files matched their manifests", r"写入后深度校验：\1 个文件与清单相符"),
    (r" \((\d+) re-read and checked after they were made durable, before they were named, and unchanged since "
     r"\(inode, size, times\); (\d+) re-read now\)",
     r"（其中 \1 个在写入落盘后、命名前已重新读取并校验，此后未变（索引节点、大小、时间）；\2 个本次重新读取）"),
    # virus checks (ingest.virus.detail_text, at ingest and by `audit --virus`)
    (r"\bat ingest \(virus_check: (\w+)\): ", r"入库时病毒检查（virus_check: \1）："),
    (r"\baudit --virus of the copy on (\S+): ", r"病毒审计（\1 上的副本）："),
    (r"\b(\d+) of (\d+) file\(s\) scanned, (\d+) infected, (\d+) skipped as too large, (\d+) not scanned",
     r"\2 个文件中扫描 \1 个，感染 \3 个，因过大跳过 \4 个，未扫描 \5 个"),
    (r"; (\d+) large file\(s\) scanned in overlapping chunks \(archives in them not unpacked\)",
     r"；\1 个大文件分段重叠扫描（其中的压缩包未解开）"),
    (r"; found: ", "；发现："),
    # deposits given up or not repeated (pipelines.flow)
    (r"^deposit (\S+) of (.+) into (\S+) abandoned by (.+?): (.*); its state and staged files are kept, nothing "
     r"stored was deleted$", r"存缴 \1（来源 \2，存入 \3）已由 \4 放弃：\5；其状态与暂存文件均保留，已存储的内容均未删除"),
    (r"^duplicate deposit: ", "重复存缴："),
    # restores (fixity.restore)
    (r"^partial restore: (\d+) of (\d+) files written, (\d+) left out \(no good copy on any verified replica: ",
     r"部分恢复：\2 个文件中写出 \1 个，\3 个未写出（任何已验证副本上都没有完好副本："),
    (r"\brestored (payload \(source tree\)|whole bag) to (.+?): (\d+) files, (\d+) bytes, verified against the "
     r"catalog while streaming; payload from (.+?); tag files from (\S+)",
     lambda m: f"已将{'载荷（源文件树）' if m.group(1).startswith('payload') else '整个包'}恢复到 {m.group(2)}："
     f"{m.group(3)} 个文件，{display_size(int(m.group(4)))}，传输时已按目录校验；载荷来自 "
     f"{m.group(5).replace(' files)', ' 个文件）').replace(' (', '（')}；标签文件来自 {m.group(6)}"),
    (r"\); (?=已将)", "）；"),
    (r"; (\d+) file\(s\) taken from a fallback replica", r"；\1 个文件取自备用副本"),
    (r"; (\d+) unchanged file\(s\) read from the earlier bag\(s\) named by fetch.txt",
     r"；\1 个未变文件读自 fetch.txt 所指的早先数据包"),
    (r"^restore to (.+?) failed, nothing was written there: ", r"恢复到 \1 失败，那里未写入任何内容："),
    (r"^restore: the copy on (.+?) was refused; this good copy \(size and (.+?) match the catalog\) was used "
     r"instead", r"恢复：\1 上的副本被拒绝；改用了这个完好副本（大小与 \2 均与目录相符）"),
    (r"^restore: copy refused: ", "恢复：副本被拒绝："),
    (r"^restore: nothing of the bag is stored at ", "恢复：该包没有任何内容存储在 "),
    (r"\brestore found (\d+) bad file\(s\): ", r"恢复时发现 \1 个坏文件："),
    (r"\brestore found: ", "恢复时发现："),
    (r"^preserved: (\d+) files, (\d+) bytes, verified on (.+?) \(policy ([^()]+)\)$",
     lambda m: f"已保存：{m.group(1)} 个文件，{display_size(int(m.group(2)))}，已在 {m.group(3)} 上校验（策略 "
     f"{m.group(4)}）"),
    # sentence ends after a rendered phrase: Chinese full stops
    (r"(?<=[\u4e00-\u9fff）])\. ?", "。"),
]
_COMPILED: List[Tuple[re.Pattern, Replacement]] = []


def zh_detail(text: str) -> str:
    """`text` with every phrase a rule knows written in Chinese (rules apply in table order); the
    damage kinds (corrupted, missing...) as the findings table names them (reports.i18n)."""
    if not _COMPILED:
        from reports.i18n import MESSAGES

        kinds = sorted((k[5:] for k in MESSAGES if k.startswith("kind.")), key=len, reverse=True)
        kind_rule = (r"(?<![\w/.-])(" + "|".join(re.escape(k) for k in kinds) + r"): ",
                     lambda m: MESSAGES[f"kind.{m.group(1)}"][1].split("（")[0] + "：")
        _COMPILED.extend((re.compile(p), r) for p, r in RULES[:-1] + [kind_rule, RULES[-1]])
    for pattern, replacement in _COMPILED:
        text = pattern.sub(replacement, text)
    return text
