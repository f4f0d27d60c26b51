"""The coverage words of the fixity report (issue 17: deep re-reads per target in 90/365 days,
the cadence target beside them, cold tiers), in English and Simplified Chinese: a part of
reports.i18n.MESSAGES kept in its own file, merged into it there."""

from __future__ import annotations

from typing import Dict, Tuple

COVERAGE_MESSAGES: Dict[str, Tuple[str, str]] = {
    "sec.coverage": ("Coverage: copies re-read in full", "覆盖率：完整重读的副本"),
    "note.coverage": ("Of the files and bytes each storage target holds, the share that a deep check (every byte "
                      "re-read and re-hashed: a deep audit, a repair verified deep, or the deposit's own read-back) "
                      "verified within the last 90 and 365 days, counted only for copies still good now. Quick "
                      "checks (presence, sizes, stored checksums) never count. The target is what the policy's "
                      "cadence asks for in that window; on a cold target, what its random-sample budget allows.",
                      "每个存储目标所保存的文件和字节中，在最近 90 天和 365 天内经过深度检查（重新读取每个字节并重新计算"
                      "哈希：深度审计、经深度验证的修复，或存入时对存储副本的回读）验证的比例，仅计入当前仍完好的副本。"
                      "快速检查（存在性、大小、存储端校验和）从不计入。目标值是策略的审计周期在该时间段内要求的比例；"
                      "冷存储目标则为其随机抽样预算所允许的比例。"),
    "col.tier": ("Tier", "存储层级"),
    "col.copies_held": ("Copies held", "保存的副本"),
    "col.bytes_held": ("Bytes held", "保存的字节"),
    "col.cov_90": ("Re-read in 90 days", "90 天内重读"),
    "col.cov_365": ("Re-read in 365 days", "365 天内重读"),
    "col.cadence": ("Cadence", "审计周期"),
    "col.never_deep": ("Never re-read", "从未重读"),
    "cov.cell": ("{bytes} of bytes ({files} of files)", "字节 {bytes}（文件 {files}）"),
    "cov.target": ("target {pct}", "目标 {pct}"),
    "cov.below": ("below target", "低于目标"),
    "cov.all_targets": ("all targets", "全部存储目标"),
    "cov.deep": ("deep audit every {every}", "每 {every}深度审计一次"),
    "cov.cold": ("cold: random sample of {size} every {every}", "冷存储：每 {every}随机抽样 {size}"),
    "cov.unknown": ("unknown (target or policy not in the config)", "未知（配置中没有该存储目标或策略）"),
    "tier.hot": ("hot", "热存储"),
    "tier.cold": ("cold", "冷存储"),
    "empty.no_coverage": ("No copies held.", "没有保存的副本。"),
}

__all__ = ["COVERAGE_MESSAGES"]
