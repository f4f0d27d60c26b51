"""Every word a report shows a person, in English and Simplified Chinese, and how dates, numbers,
sizes and durations are written in each.

One table (`MESSAGES`: key -> (en, zh)) holds every label, heading, sentence and controlled value
(replica states, event outcomes, PREMIS event types...), so a missing translation is a KeyError
when the report is rendered (and a test failure), never silently English in a Chinese report.
Data (collection names, bag ids, file paths, details written by other tools, PUIDs) is shown as
it is. Machine forms (CSV and JSON) keep stable English keys in every language; only the prose
in them (NDSA evidence) follows `--lang`.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any, Dict, Iterable, Optional, Tuple

from reports.common import LANGS
from reports.i18n_coverage import COVERAGE_MESSAGES
from reports.i18n_evidence import EVIDENCE_MESSAGES
from reports.i18n_governance import GOVERNANCE_MESSAGES
from reports.i18n_ndsa import NDSA_MESSAGES

MESSAGES: Dict[str, Tuple[str, str]] = {
    # titles and header
    "title.preservation": ("Preservation report", "长期保存报告"),
    "title.fixity": ("Fixity report", "固定性审计报告"),
    "title.formats": ("Format report", "格式报告"),
    "meta.scope": ("Scope", "范围"),
    "meta.period": ("Period", "期间"),
    "meta.generated": ("Generated", "生成时间"),
    "meta.catalog": ("Catalog", "目录位置"),
    "meta.ledger_head": ("Ledger head", "账本头"),
    "scope.all": ("All libraries and collections", "全部图书馆与馆藏"),
    "scope.library": ("Library {library}", "图书馆 {library}"),
    "scope.collection": ("Collection {collection}, every library", "各图书馆的馆藏 {collection}"),
    "scope.library_collection": ("Library {library}, collection {collection}", "图书馆 {library} 的馆藏 {collection}"),
    "period.all": ("All time, up to the report", "全部时间（截至报告生成）"),
    "period.since": ("From {since}", "自 {since} 起"),
    "period.until": ("Before {until}", "{until} 之前"),
    "period.between": ("From {since}, before {until}", "自 {since} 起，至 {until} 之前"),
    "footer.text": ("Written by Strongroom {version} from its catalog, ledger and config. Every figure can be "
                    "re-checked in the CSV and JSON forms of this report.",
                    "由 Strongroom {version} 根据其目录、账本与配置生成。所有数字均可通过本报告的 CSV 与 JSON "
                    "版本复核。"),
    # ledger
    "ledger.empty": ("none (no events yet)", "无（尚无事件）"),
    "ledger.intact": ("intact: every segment re-hashed and the chain checked",
                      "完好：已重新计算每个分段的哈希并检查了哈希链"),
    "ledger.altered": ("ALTERED: see the problems listed", "已被篡改：见所列问题"),
    "ledger.intact_short": ("intact", "完好"),
    "ledger.altered_short": ("ALTERED", "已被篡改"),
    "ledger.altered_note": ("The ledger failed verification ({n} problems):", "账本验证失败（{n} 个问题）："),
    "ledger.result": ("Verification", "验证结果"),
    "ledger.head": ("Head at report time", "报告生成时的账本头"),
    "ledger.segments": ("Segments", "分段数"),
    "ledger.events": ("Events", "事件数"),
    "ledger.verified_at": ("Verified at", "验证时间"),
    # sections
    "sec.summary": ("Summary", "概览"),
    "sec.holdings": ("Holdings", "馆藏资源"),
    "sec.copies": ("Copies per site", "各站点的副本"),
    "sec.retention": ("Retention and audit cadence", "保留策略与审计周期"),
    "sec.audits": ("Audits", "审计情况"),
    "sec.attention": ("Needs attention", "需要处理的问题"),
    "sec.repairs": ("Repairs in the period", "本期修复"),
    "sec.ndsa": ("NDSA Levels of Digital Preservation (v2.0)", "NDSA 数字保存分级（2.0 版）"),
    "sec.method": ("How the levels are assessed", "分级评估方法"),
    "sec.ledger": ("Ledger verification", "账本验证"),
    "sec.outcomes": ("Audit outcomes", "审计结果"),
    "sec.damage": ("Damage found and how it was repaired", "发现的损坏及修复情况"),
    "sec.not_audited": ("Copies never or not recently audited", "从未审计或近期未审计的副本"),
    "sec.per_copy": ("Audits per bag and copy", "各包及副本的审计"),
    "sec.events": ("Audit and repair events", "审计与修复事件"),
    "sec.findings": ("Open findings", "未解决的问题"),
    "sec.deposits": ("Deposits not finished", "未完成的存缴"),
    "note.deposits": ("Deposits that never reached the archive, whatever the period: failed (a step failed; "
                      "the reason says what to fix), abandoned (given up with `deposit --abandon`, with its "
                      "reason) and unfinished (to be resumed by running the same deposit again).",
                      "从未进入档案库的存缴（不受期间限制）：失败（某一步骤失败，原因说明需要修正什么）、已放弃（用 "
                      "`deposit --abandon` 放弃，附原因）与未完成（再次运行同一存缴命令即可继续）。"),
    "deposit.failed": ("failed", "失败"),
    "deposit.abandoned": ("abandoned", "已放弃"),
    "deposit.unfinished": ("unfinished", "未完成"),
    "col.deposit": ("Deposit", "存缴"),
    "col.source": ("Source", "来源"),
    "col.started": ("Started", "开始时间"),
    "col.reason": ("Reason", "原因"),
    "empty.no_deposits": ("Every deposit finished.", "所有存缴均已完成。"),
    "sec.locations": ("Locations", "存储位置"),
    "sec.formats": ("Formats", "格式"),
    "sec.unidentified": ("Unidentified files", "未识别的文件"),
    "sec.at_risk": ("Files in at-risk formats", "采用高风险格式的文件"),
    "sec.methods": ("How files were identified", "文件识别方式"),
    "sec.by_collection": ("Formats per collection", "各馆藏的格式"),
    "sub.per_copy": ("Every copy", "全部副本"),
    "sub.open_damage": ("Copies damaged, failed, missing, absent or unverified", "损坏、失败、缺失、未记录或未验证的副本"),
    "sub.overdue": ("Copies overdue for an audit", "审计逾期的副本"),
    "sub.location_groups": ("Which storage targets are one location", "哪些存储目标属于同一位置"),
    "sub.collection_locations": ("Separate locations holding each collection's verified copies",
                                 "各馆藏已验证副本所在的不同位置"),
    "sub.events_by_type": ("Events in the period by type", "本期各类事件"),
    "cap.by_type": ("By collection type", "按馆藏类型"),
    "cap.policies": ("Format rules of the policies", "各策略的格式规则"),
    # cards
    "card.collections": ("collections", "馆藏"),
    "card.bags": ("bags", "包"),
    "card.files": ("files", "文件"),
    "card.bytes": ("held", "数据量"),
    "card.verified_copies": ("verified copies / all copies", "已验证副本 / 全部副本"),
    "card.open_damage": ("copies needing action", "需处理的副本"),
    "card.overdue": ("copies overdue for audit", "审计逾期的副本"),
    "card.ledger": ("event ledger", "事件账本"),
    "card.open_findings": ("open findings", "未解决的问题"),
    "card.fixity_checks": ("fixity checks", "固定性检查"),
    "card.passed": ("passed", "通过"),
    "card.failed": ("failed", "失败"),
    "card.inconclusive": ("inconclusive", "无定论"),
    "card.repairs": ("repairs", "修复"),
    "card.damage_repaired": ("damage repaired / found", "已修复 / 发现的损坏"),
    "card.not_audited": ("copies not (recently) audited", "未（近期）审计的副本"),
    "card.formats": ("formats (PUIDs)", "格式数"),
    "card.unidentified": ("unidentified files", "未识别的文件"),
    "card.at_risk": ("files in at-risk formats", "高风险格式文件"),
    # columns
    "col.library": ("Library", "图书馆"),
    "col.collection": ("Collection", "馆藏"),
    "col.type": ("Type", "类型"),
    "col.policy": ("Policy", "策略"),
    "col.bags": ("Bags", "包数"),
    "col.files": ("Files", "文件数"),
    "col.bytes": ("Size", "数据量"),
    "col.copies": ("Copies", "副本"),
    "col.site": ("Site", "站点"),
    "col.target": ("Storage target", "存储目标"),
    "col.storage_type": ("Storage type", "存储类型"),
    "col.state": ("State", "状态"),
    "col.retention": ("Retention", "保留"),
    "col.object_lock": ("Object lock", "对象锁定"),
    "col.deep_every": ("Deep audit every", "深度审计周期"),
    "col.quick_every": ("Quick check every", "快速检查周期"),
    "col.verified_copies": ("Verified copies", "已验证副本"),
    "col.last_deep": ("Last deep audit", "最近深度审计"),
    "col.last_quick": ("Last quick check", "最近快速检查"),
    "col.overdue_deep": ("Deep audit overdue", "深度审计逾期"),
    "col.overdue_quick": ("Quick check overdue", "快速检查逾期"),
    "col.when": ("When", "时间"),
    "col.event_type": ("Event", "事件"),
    "col.outcome": ("Outcome", "结果"),
    "col.bag": ("Bag", "包"),
    "col.path": ("File", "文件"),
    "col.detail": ("Detail", "详情"),
    "col.events": ("Events", "事件数"),
    "col.area": ("Functional area", "功能领域"),
    "col.level": ("Level", "级别"),
    "col.rule": ("Rule", "规则"),
    "col.verified": ("Verified", "验证时间"),
    "col.deep_due": ("Deep audit due", "深度审计到期"),
    "col.repaired": ("Repaired", "修复时间"),
    "col.repair": ("Repair event", "修复事件"),
    "col.agent": ("Agent", "执行者"),
    "col.audits": ("Checks in period", "本期检查次数"),
    "col.passed": ("Passed", "通过"),
    "col.failed": ("Failed", "失败"),
    "col.inconclusive": ("Inconclusive", "无定论"),
    "col.attention": ("Attention", "需关注"),
    "col.kind": ("Problem", "问题类型"),
    "col.since": ("Found since", "首次发现"),
    "col.last_found": ("Last found", "最近一次发现"),
    "attention.findings": ("{n} open finding(s)", "{n} 个未解决的问题"),
    "col.first_found": ("First found", "首次发现"),
    "col.times_found": ("Times found", "发现次数"),
    "col.location": ("Location", "位置"),
    "col.targets": ("Storage targets", "存储目标"),
    "col.sites": ("Sites", "站点"),
    "col.shared_by": ("Counted as one location because", "计为同一位置的原因"),
    "col.good_copies": ("Verified copies per bag", "每个包的已验证副本"),
    "col.locations": ("Separate locations per bag", "每个包的不同位置数"),
    "col.locations_held": ("Locations holding them", "所在位置"),
    "col.ndsa_storage": ("NDSA storage level", "NDSA 存储级别"),
    "col.puid": ("PRONOM id", "格式标识"),
    "col.format": ("Format", "格式名称"),
    "col.version": ("Version", "版本"),
    "col.share_files": ("Share of files", "文件占比"),
    "col.share_bytes": ("Share of size", "数据量占比"),
    "col.at_risk_files": ("Files at risk", "高风险文件"),
    "col.method": ("Identified by", "识别方式"),
    "col.unidentified_rule": ("Unidentified files", "未识别文件的处理"),
    "col.at_risk_list": ("Formats listed as at risk", "列为高风险的格式"),
    # notes
    "note.audits": ("A deep audit re-hashes every file of a copy (verification after copying counts as one); a "
                    "quick check confirms every file is there with the right size. A copy is overdue when no deep "
                    "audit finished within its deep interval, or no check of any kind within its quick interval.",
                    "深度审计会重新计算副本中每个文件的校验值（复制后的验证也计为一次深度审计）；快速检查确认每个文件"
                    "都存在且大小正确。若在深度审计周期内没有完成深度审计，或在快速检查周期内没有任何检查，"
                    "该副本即为逾期。"),
    "note.fixity_terms": ("Fixity checks, passed, failed and inconclusive count check events: one per copy audited "
                          "and one more per file found damaged or unreadable, at every audit. Damage counts each "
                          "damaged file (or whole copy) once; repairs count repair events (see below).",
                          "固定性检查、通过、失败与无定论统计的是检查事件：每次审计中每个被审计的副本一条，每个被发现损坏或"
                          "无法读取的文件再各一条。损坏按文件（或整个副本）只计一次；修复统计修复事件（见下文）。"),
    "note.damage_terms": ("Damage: a file of a copy (or a whole copy or bag) that a fixity check in the period "
                          "found damaged, counted once however many audits found it. Repaired: damage with a "
                          "successful repair after it was last found. Repairs: successful repair events (files "
                          "replaced from a good copy, extra files set aside or removed), so they can outnumber "
                          "the damage repaired.",
                          "损坏：期间内固定性检查发现已损坏的某副本中的一个文件（或整个副本、整个数据包），无论被几次审计"
                          "发现，只计一次。已修复：最近一次发现之后有成功修复的损坏。修复：成功的修复事件（用完好副本替换"
                          "文件、移开或删除多余文件），因此修复次数可能多于已修复的损坏。"),
    "note.more_rows": ("{n} more rows are in the CSV and JSON forms of this report.",
                       "另有 {n} 行，见本报告的 CSV 与 JSON 版本。"),
    "note.ndsa": ("Levels are cumulative: a collection reaches a level when every rule of it and of the levels "
                  "below holds for every one of its bags. The evidence is what the catalog, ledger and config show "
                  "at report time; the items to attest are NDSA requirements that Strongroom cannot see.",
                  "各级别逐级累进：只有当馆藏中的每个包都满足该级别及以下各级别的全部规则时，馆藏才达到该级别。"
                  "依据为报告生成时目录、账本与配置中的记录；需另行证明的条目是 Strongroom 无法核查的 NDSA 要求。"),
    "note.method": ("The rules Strongroom applies for each functional area and level of the NDSA Levels v2.0.",
                    "Strongroom 对 NDSA 数字保存分级 2.0 版各功能领域和各级别所采用的规则。"),
    "note.fixity_rows": ("{events} audit and repair events in the period; the CSV and JSON forms list one row per "
                         "event, so every total can be re-counted.",
                         "本期共有 {events} 条审计与修复事件；CSV 与 JSON 版本每个事件一行，所有合计均可复核。"),
    "note.ledger_head": ("Keep this head hash: `strongroom ledger verify --expected-head HASH` later proves that no "
                         "event recorded up to now was altered or removed.",
                         "请保存此账本头哈希：日后运行 `strongroom ledger verify --expected-head HASH` 即可证明"
                         "截至目前记录的事件没有被修改或删除。"),
    "note.latest_events": ("The latest {shown} of {n} events are shown; the CSV and JSON forms list all of them.",
                           "此处显示 {n} 条事件中最近的 {shown} 条；CSV 与 JSON 版本列出全部事件。"),
    "note.collection_formats": ("{files} files, {bytes}, {formats} formats; {unidentified} unidentified, "
                                "{at_risk} in at-risk formats.",
                                "{files} 个文件，{bytes}，{formats} 种格式；{unidentified} 个未识别，"
                                "{at_risk} 个采用高风险格式。"),
    "note.findings": ("Damage and doubt the audits found and no later check has resolved, whatever the period "
                      "of this report: each stays listed until a repair, or a later deep audit that no longer "
                      "finds it, resolves it.",
                      "审计发现、且尚未被后续检查解决的损坏与存疑问题（不论本报告的期间）：每一项都会一直列出，"
                      "直到修复，或后续的深度审计不再发现该问题为止。"),
    "note.locations": ("Storage targets on one file system, in one S3 bucket or on one site are one location: "
                       "losing that disk, bucket or site loses every copy on it. The NDSA storage levels count "
                       "these locations, not targets.",
                       "位于同一文件系统、同一 S3 存储桶或同一站点的存储目标算作一个位置：该磁盘、存储桶或站点一旦损失，"
                       "其上的所有副本都会丢失。NDSA 存储级别按位置计数，而不是按存储目标计数。"),
    "alert.findings": ("{n} open finding(s): damage or doubt that no later check has resolved. See “Open "
                       "findings” below.",
                       "有 {n} 个未解决的问题：后续检查尚未解决的损坏或存疑。见下文“未解决的问题”。"),
    "alert.one_location": ("Some collections' verified copies are all in one location: one lost disk, bucket or "
                           "site would lose every copy (see “Locations”).",
                           "部分馆藏的已验证副本全部位于同一位置：一块磁盘、一个存储桶或一个站点的损失就会丢失全部副本"
                           "（见“存储位置”）。"),
    # empty states
    "empty.nothing_held": ("Nothing is held in this scope.", "此范围内尚未保存任何内容。"),
    "empty.no_copies": ("No copies are recorded.", "没有副本记录。"),
    "empty.no_damage": ("No copy is damaged, failed, missing, absent or unverified.",
                        "没有损坏、失败、缺失、未记录或未验证的副本。"),
    "empty.no_overdue": ("No audit is overdue.", "没有逾期的审计。"),
    "empty.no_repairs": ("No repairs in the period.", "本期没有修复。"),
    "empty.no_events": ("No events in the period.", "本期没有事件。"),
    "empty.no_audits": ("No audit events in the period.", "本期没有审计事件。"),
    "empty.no_damage_found": ("No damage was found in the period.", "本期没有发现损坏。"),
    "empty.all_audited": ("Every copy was checked in the period and none is overdue.",
                          "本期每个副本都经过检查，且没有逾期。"),
    "empty.all_identified": ("Every file is identified to a PRONOM format.", "每个文件都已识别到 PRONOM 格式。"),
    "empty.no_at_risk": ("No file is in a format its policy lists as at risk.", "没有文件采用其策略列为高风险的格式。"),
    "empty.no_findings": ("No open findings: no copy is damaged, disputed, missing, failed or inconclusive.",
                          "没有未解决的问题：没有副本处于损坏、有争议、缺失、失败或无定论状态。"),
    # words
    "word.yes": ("yes", "是"),
    "word.no": ("no", "否"),
    "word.extra": ("not in the policy", "策略之外"),
    "word.overdue": ("overdue", "逾期"),
    "word.not_repaired": ("not repaired", "未修复"),
    "word.never_audited": ("never checked", "从未检查"),
    "word.none_in_period": ("not checked in the period", "本期未检查"),
    "word.none": ("none", "无"),
    "word.never": ("never", "从未"),
    "word.unidentified": ("unidentified", "未识别"),
    "word.other": ("other", "其他"),
    "word.whole_copy": ("the whole copy", "整个副本"),
    "word.no_good_copy": ("no good copy to repair from", "没有可用于修复的完好副本"),
    "word.own_location": ("a location of its own", "独立位置"),
    "shared.file system": ("on one file system", "位于同一文件系统"),
    "shared.bucket": ("in one S3 bucket", "位于同一 S3 存储桶"),
    "shared.site": ("given one site in the config", "配置中属于同一站点"),
    "kind.corrupted": ("corrupted (content differs)", "内容已损坏（校验值不符）"),
    "kind.truncated": ("truncated (shorter than recorded)", "被截短（比记录的短）"),
    "kind.grown": ("grown (longer than recorded)", "变长（比记录的长）"),
    "kind.missing": ("missing", "缺失"),
    "kind.extra": ("extra file", "多余文件"),
    "kind.not-a-file": ("not a regular file (link, FIFO, device or folder)", "不是普通文件（链接、管道、设备或文件夹）"),
    "kind.shared-storage": ("shares storage with another copy", "与另一副本共用存储"),
    "kind.tag-damaged": ("tag file damaged", "标签文件已损坏"),
    "kind.tag-missing": ("tag file missing", "标签文件缺失"),
    "kind.bag-missing": ("bag missing from the target", "存储目标上缺少该包"),
    "kind.bag-not-a-folder": ("bag folder is a link or not a folder", "包文件夹是链接或不是文件夹"),
    "kind.manifest-disagrees": ("the copy's manifest disagrees with the catalog", "副本的清单与目录不一致"),
    "kind.catalog-disagrees": ("the catalog disagrees with the copies", "目录与副本不一致"),
    "kind.no-good-copy": ("no good copy to repair from", "没有可用于修复的完好副本"),
    "kind.tag-in-doubt": ("copies of a tag file disagree", "标签文件的各副本不一致"),
    "kind.disputed": ("disputed (copies disagree, nothing decides)", "有争议（副本不一致，无从判定）"),
    "kind.unreadable": ("unreadable (check inconclusive)", "无法读取（检查无定论）"),
    "kind.unreachable": ("unreachable (check inconclusive)", "无法访问（检查无定论）"),
    "kind.inconclusive": ("inconclusive check", "检查无定论"),
    "kind.damaged": ("damaged", "已损坏"),
    "kind.failed": ("failed", "失败"),
    "retention.unknown_policy": ("this policy is not in the config", "配置中没有此策略"),
    "retention.none": ("none", "无"),
    "retention.governance": ("governance, {years} years", "治理模式，{years} 年"),
    "retention.compliance": ("compliance, {years} years", "合规模式，{years} 年"),
    "unidentified_rule.warn": ("warn and keep", "警告并保存"),
    "unidentified_rule.fail": ("refuse the deposit", "拒绝提交"),
    # controlled values
    "state.verified": ("verified", "已验证"),
    "state.repaired": ("repaired", "已修复"),
    "state.copied": ("copied, not verified", "已复制未验证"),
    "state.pending": ("pending", "待处理"),
    "state.failed": ("failed", "失败"),
    "state.damaged": ("damaged", "已损坏"),
    "state.missing": ("missing", "缺失"),
    "state.disputed": ("disputed (copies disagree, nothing decides)", "有争议（副本不一致，无从判定）"),
    "state.absent": ("absent (no record)", "未记录"),
    "outcome.success": ("success", "成功"),
    "outcome.failure": ("failure", "失败"),
    "outcome.warning": ("warning", "警告"),
    "outcome.inconclusive": ("inconclusive", "无定论"),
    "etype.fixity check": ("fixity check", "固定性检查"),
    "etype.repair": ("repair", "修复"),
    "etype.recovery": ("recovery", "恢复"),
    "etype.replication": ("replication", "复制"),
    "etype.ingestion": ("ingestion", "接收"),
    "etype.dissemination": ("dissemination", "分发"),
    "etype.metadata extraction": ("metadata extraction", "元数据提取"),
    "etype.validation": ("validation", "验证"),
    "etype.deletion": ("deletion", "删除"),
    "etype.message digest calculation": ("message digest calculation", "消息摘要计算"),
    "etype.format identification": ("format identification", "格式识别"),
    "ctype.purchased": ("purchased", "购买资源"),
    "ctype.self-built": ("self-built", "自建资源"),
    "stype.filesystem": ("filesystem", "文件系统"),
    "stype.s3": ("S3", "S3 对象存储"),
    "stype.unknown": ("unknown", "未知"),
    "method.signature": ("signature", "特征签名"),
    "method.container": ("container signature", "容器签名"),
    "method.extension": ("file extension only", "仅凭扩展名"),
    "method.none": ("not identified", "未能识别"),
    "method.-": ("no record", "无记录"),
    "unit.d": ("{n} days", "{n} 天"),
    "unit.h": ("{n} hours", "{n} 小时"),
    "unit.min": ("{n} minutes", "{n} 分钟"),
    "unit.s": ("{n} seconds", "{n} 秒"),
    **NDSA_MESSAGES,
    **COVERAGE_MESSAGES,
    **GOVERNANCE_MESSAGES,
    **EVIDENCE_MESSAGES,
    # charts
    "chart.holdings": ("Size held per collection", "各馆藏的数据量"),
    "chart.copies": ("Copies per site, by state", "各站点副本数（按状态）"),
    "chart.ndsa": ("NDSA level per functional area", "各功能领域的 NDSA 级别"),
    "chart.months": ("Fixity checks per month, by outcome", "每月固定性检查次数（按结果）"),
    "chart.files": ("Files per format (largest {n})", "各格式文件数（前 {n} 种）"),
    "chart.bytes": ("Size per format (largest {n})", "各格式数据量（前 {n} 种）"),
    "axis.bytes": ("size", "数据量"),
    "axis.files": ("files", "文件数"),
    "axis.copies": ("copies", "副本数"),
    "axis.level": ("level", "级别"),
    "axis.checks": ("fixity checks", "检查次数"),
}

ACRONYMS = ("NDSA", "PUID", "PRONOM", "PREMIS", "BagIt", "CSV", "JSON", "UTC", "S3", "SVG", "HASH", "Strongroom")
_DURATION = re.compile(r"^(\d+)(d|h|min|s)$")


class Translator:
    """`t(key, **params)` and the value formatters the templates and writers use, for one language."""

    def __init__(self, lang: str = "en"):
        if lang not in LANGS:
            raise ValueError(f"unknown language {lang!r}; one of {', '.join(LANGS)}")
        self.lang = lang
        self.index = LANGS.index(lang)
        self.html_lang = "zh-Hans" if lang == "zh" else "en"

    def t(self, key: str, **params: Any) -> str:
        text = MESSAGES[key][self.index]
        return text.format(**{k: self.value(v) for k, v in params.items()}) if params else text

    __call__ = t

    # -- values ---------------------------------------------------------------------------
    def value(self, v: Any) -> str:
        if v is None:
            return "—"
        if isinstance(v, bool):
            return self.t("word.yes" if v else "word.no")
        if isinstance(v, int):
            return self.num(v)
        if isinstance(v, _dt.datetime):
            return self.date(v)
        if isinstance(v, (list, tuple)):
            return self.join(self.value(x) for x in v) if v else self.t("word.none")
        return str(v)

    def join(self, items: Iterable[str]) -> str:
        return ("、" if self.lang == "zh" else ", ").join(items)

    def paren(self, text: str) -> str:
        """A remark after a sentence: full-width brackets in Chinese."""
        return f"（{text}）" if self.lang == "zh" else f" ({text})"

    def num(self, n: Optional[int]) -> str:
        return "—" if n is None else f"{int(n):,}"

    def size(self, n: Optional[int]) -> str:
        """Every size on every page: policies.units.display_size (decimal, ~3 figures)."""
        from policies.units import display_size

        return "—" if n is None else display_size(int(n))

    def detail(self, text: Optional[str]) -> str:
        """An event's or copy's detail: the texts Strongroom writes are rendered in Chinese in
        the zh reports (reports.details); anything else (a tool's message, a path) as it is."""
        if not text:
            return ""
        if self.lang == "en":
            return text
        from reports.details import zh_detail

        return zh_detail(text)

    def agent(self, event: Dict[str, Any]) -> str:
        """Who acted (contract C3: operator, the library acted for, the software), then the
        program that ran when it says more (a virus scanner's version and database)."""
        from strongroom.agent import describe

        who = describe(event.get("operator"), event.get("agent_library"), event.get("software"), lang=self.lang)
        program = event.get("agent")
        return f"{who} · {program}" if program and program not in who else who

    def range(self, low: Optional[int], high: Optional[int]) -> str:
        """A count over many bags: one number when they agree, else the fewest to the most."""
        if low is None or high is None or low == high:
            return self.num(low if low is not None else high)
        return f"{self.num(low)}–{self.num(high)}"

    def percent(self, part: int, whole: int) -> str:
        return "—" if not whole else f"{100.0 * part / whole:.1f}%"

    def date(self, d: Optional[_dt.datetime]) -> str:
        if d is None:
            return self.t("word.never")
        d = d.astimezone(_dt.timezone.utc)
        return f"{d.year}年{d.month}月{d.day}日" if self.lang == "zh" else d.strftime("%Y-%m-%d")

    def datetime(self, d: Optional[_dt.datetime]) -> str:
        if d is None:
            return self.t("word.never")
        d = d.astimezone(_dt.timezone.utc)
        return f"{self.date(d)} {d.strftime('%H:%M')} UTC"

    def span(self, a: Optional[_dt.datetime], b: Optional[_dt.datetime]) -> str:
        if a is None and b is None:
            return self.t("word.never")
        if a is None or b is None or self.date(a) == self.date(b):
            return self.date(a or b)
        return f"{self.date(a)} {'至' if self.lang == 'zh' else '–'} {self.date(b)}"

    def duration(self, text: Optional[str]) -> str:
        m = _DURATION.match(text or "")
        return self.t(f"unit.{m.group(2)}", n=m.group(1)) if m else (text or "—")

    def _controlled(self, prefix: str, value: Optional[str]) -> str:
        if value is None:
            return "—"
        key = f"{prefix}.{value}"
        return self.t(key) if key in MESSAGES else value  # an unknown value is data: shown as it is

    def state(self, s: Optional[str]) -> str:
        return self._controlled("state", s)

    def outcome(self, o: Optional[str]) -> str:
        return self._controlled("outcome", o)

    def etype(self, e: Optional[str]) -> str:
        return self._controlled("etype", e)

    def ctype(self, c: Optional[str]) -> str:
        return self._controlled("ctype", c)

    def ctypes(self, values: Iterable[str]) -> str:
        return self.join(self.ctype(v) for v in values)

    def kind(self, k: Optional[str]) -> str:
        """An open finding's kind (fixity.audit's damage and inconclusive kinds)."""
        return self._controlled("kind", k)

    def shared(self, reasons: Iterable[str]) -> str:
        """Why targets are one location (reports.preservation.SHARED_BY), or that a target is alone."""
        reasons = list(reasons)
        return self.join(self._controlled("shared", r) for r in reasons) if reasons else self.t("word.own_location")

    def stype(self, s: Optional[str]) -> str:
        return self._controlled("stype", s)

    def method(self, m: Optional[str]) -> str:
        return self._controlled("method", m if m is not None else "-")

    def unidentified_rule(self, r: Optional[str]) -> str:
        return self._controlled("unidentified_rule", r)

    def retention(self, mode: Optional[str], years: Optional[int]) -> str:
        if mode is None:
            return "—"
        return self.t(f"retention.{mode}", years=years or 0) if f"retention.{mode}" in MESSAGES else mode

    def area(self, a: str) -> str:
        return self.t(f"area.{a}")

    def level(self, n: int) -> str:
        return self.t("level.n", n=str(n))

    def level_name(self, n: int) -> str:
        return self.t(f"level.name.{n}")

    def rule(self, key: str) -> str:
        return self.t(f"ndsa.{key}.rule")

    def finding(self, result: Any) -> str:
        """An NDSA rule result's finding, its parameters written for this language."""
        key, params = _get(result, "key"), dict(_get(result, "params") or {})
        out: Dict[str, str] = {}
        for name, v in params.items():
            if name == "ledger":
                out[name] = self.t(f"ndsa.{v}")
            elif name == "bytes":
                out[name] = self.size(v)
            elif name == "every":
                out[name] = self.join(self.duration(x) for x in v) if v else "—"
            elif name == "methods":
                out[name] = self.join(f"{self.method(None if m == '-' else m)} {self.num(n)}" for m, n in v.items()) \
                    if v else self.t("word.none")
            elif isinstance(v, str) and _dt_like(v):
                out[name] = self.date(_parse_iso(v))
            else:
                out[name] = self.value(v)
        return MESSAGES[f"ndsa.{key}.finding"][self.index].format(**out)


def _get(obj: Any, name: str) -> Any:
    return obj[name] if isinstance(obj, dict) else getattr(obj, name)


def _dt_like(text: str) -> bool:
    return len(text) >= 20 and text[4] == "-" and text[10] == "T" and text.endswith("Z")


def _parse_iso(text: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(text[:-1] + "+00:00")
