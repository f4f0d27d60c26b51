"""The words of the certification evidence pack (reports.evidence) and of the restore drills the
reports show, in English and Simplified Chinese: a part of reports.i18n.MESSAGES kept in its own
file (one long set of texts per requirement), merged into it there, so a missing translation is
still a KeyError at rendering. The requirement lines are short paraphrases naming the metric,
not the standards' own text.
"""

from __future__ import annotations

from typing import Dict, Tuple

#: (framework, number) of every requirement the pack maps, in the order shown.
REQUIREMENTS: Tuple[Tuple[str, str], ...] = (
    ("iso16363", "3.3.5"), ("iso16363", "4.1.6"), ("iso16363", "4.2.9"), ("iso16363", "4.4.1.2"),
    ("iso16363", "4.4.2"), ("iso16363", "4.6.1.1"), ("iso16363", "5.1.1.3"), ("iso16363", "5.1.1.3.1"),
    ("iso16363", "5.1.2"), ("iso16363", "5.1.2.1"), ("iso16363", "5.2.4"),
    ("coretrustseal", "R07"), ("coretrustseal", "R14"),
)

EVIDENCE_MESSAGES: Dict[str, Tuple[str, str]] = {
    "title.evidence": ("Certification evidence", "认证证据包"),
    "sec.claims": ("Requirements and evidence", "要求与证据"),
    "sec.drills": ("Restore drills per target", "各存储目标的恢复演练"),
    "sec.anchors": ("Ledger anchored in storage", "存储中锚定的账本"),
    "ev.sec.method": ("How to read this pack", "如何阅读本证据包"),
    "framework.iso16363": ("ISO 16363:2012", "ISO 16363:2012 标准"),
    "framework.coretrustseal": ("CoreTrustSeal 2023–2025", "CoreTrustSeal 2023–2025 版要求"),
    "ev.status.evidenced": ("evidenced", "有证据"),
    "ev.status.gaps": ("evidenced, with gaps", "有证据，但有缺口"),
    "ev.status.not_evidenced": ("not evidenced", "无证据"),
    "ev.col.requirement": ("Requirement", "要求"),
    "ev.col.status": ("Status", "状态"),
    "ev.col.evidence": ("What the catalog and ledger show", "目录与账本所显示的"),
    "ev.col.events": ("Events behind it", "所依据的事件"),
    "ev.col.cannot": ("What this cannot evidence", "本报告无法证明的"),
    "ev.events_more": ("and {n} more (the JSON form lists them)", "另有 {n} 个（JSON 格式中列出）"),
    "ev.no_events": ("none", "无"),
    "ev.intact": ("intact", "完整"),
    "ev.altered": ("ALTERED", "已被篡改"),
    "ev.intro": ("Each requirement below is mapped to figures computed from the catalog and the hash-chained "
                 "ledger at the time of this report, by the same functions as the preservation and fixity "
                 "reports (their figures agree), with the ids of the ledger events behind them and, plainly, "
                 "what the catalog cannot show. A status is what the records show, not a certification.",
                 "下列每项要求都对应到本报告生成时从目录与哈希链账本计算出的数据，计算方法与保存报告和固定性报告"
                 "相同（数字一致），并列出所依据的账本事件编号，以及目录无法证明的内容。状态只表示记录所显示的"
                 "情况，并非认证结论。"),
    "ev.method": ("Event ids are those of the ledger (`strongroom report fixity --format json` lists every audit "
                  "event with its id; `strongroom ledger verify --against-storage` re-checks the chain and the "
                  "checkpoints). Coverage counts only deep re-reads of copies still good. A restore drill "
                  "restores bags from one target alone into scratch space and verifies every byte. CoreTrustSeal "
                  "numbers follow the 2023–2025 requirements (R07 Provenance and authenticity, R14 Storage and "
                  "integrity; in the 2020–2022 numbering R7 and R9).",
                  "事件编号即账本中的编号（`strongroom report fixity --format json` 列出每个审计事件及其编号；"
                  "`strongroom ledger verify --against-storage` 重新检查哈希链与检查点）。覆盖率只统计当前仍完好的"
                  "副本的深度重读。恢复演练只从一个存储目标把包恢复到临时空间并校验每个字节。CoreTrustSeal 编号"
                  "依据 2023–2025 版要求（R07 来源与真实性，R14 存储与完整性；2020–2022 版编号为 R7 与 R9）。"),
    # requirement lines (short paraphrases)
    "req.3.3.5": ("Information integrity measurements are defined, collected, tracked and provided.",
                  "定义、收集、跟踪并适当提供信息完整性度量。"),
    "req.4.1.6": ("The repository has sufficient control over the digital objects to preserve them.",
                  "对数字对象有足以保存它们的控制。"),
    "req.4.2.9": ("An independent mechanism verifies the integrity of the repository's content.",
                  "有独立的机制核验馆藏内容的完整性。"),
    "req.4.4.1.2": ("The integrity of the archival packages is actively monitored.",
                    "主动监测存档信息包的完整性。"),
    "req.4.4.2": ("Contemporaneous records of the actions relevant to storage and preservation.",
                  "对与存储和保存相关的操作有同步记录。"),
    "req.4.6.1.1": ("Access management failures and anomalies are logged and reviewed.",
                    "记录并审查访问管理中的失败与异常。"),
    "req.5.1.1.3": ("Effective mechanisms detect bit corruption or loss.", "有有效机制发现比特损坏或丢失。"),
    "req.5.1.1.3.1": ("Incidents of corruption or loss are recorded, reported, and repaired or replaced.",
                      "记录并报告损坏或丢失事件，并修复或替换。"),
    "req.5.1.2": ("The number and location of copies of every object are managed.", "管理每个对象副本的数量和位置。"),
    "req.5.1.2.1": ("Multiple copies of the digital objects are kept synchronised.", "保持数字对象的多个副本同步。"),
    "req.5.2.4": ("Disaster preparedness and recovery, with at least one off-site copy of everything preserved.",
                  "有灾难准备与恢复措施，所有保存内容至少有一份异地副本。"),
    "req.R07": ("Provenance and authenticity: changes to the objects are recorded and their authenticity can be "
                "shown.", "来源与真实性：对对象的改动有记录，其真实性可以证明。"),
    "req.R14": ("Storage and integrity: the data are stored, checked and kept intact by documented processes.",
                "存储与完整性：以成文的流程存储、检查并保持数据完整。"),
    # what the records show
    "find.3.3.5": ("Policies set the cadence ({cadences}). {checks} fixity checks are recorded ({passed} passed, "
                   "{failed} failed, {inconclusive} inconclusive). Deep re-reads cover {cov90} of the bytes held "
                   "in the last 90 days (cadence target {exp90}) and {cov365} in 365 days.",
                   "策略规定了检查周期（{cadences}）。已记录 {checks} 次固定性检查（通过 {passed}，失败 {failed}，"
                   "无定论 {inconclusive}）。近 90 天的深度重读覆盖所持字节的 {cov90}（周期目标 {exp90}），"
                   "近 365 天为 {cov365}。"),
    "find.4.1.6": ("The catalog lists {bags} bags ({files} files, {size}) with every file's size and digests, and "
                   "{copies} copies on {targets} storage targets, {verified} of them verified now.",
                   "目录列出 {bags} 个包（{files} 个文件，{size}），含每个文件的大小与摘要，以及 {targets} 个存储"
                   "目标上的 {copies} 份副本，其中 {verified} 份当前已验证。"),
    "find.4.2.9": ("The ledger head (segment {head}) is anchored as checkpoints on {anchored} of {targets} targets "
                   "({checkpoints} checkpoints); they agree with the catalog: {agree}. A verifier that needs only "
                   "Python's standard library is stored on {verifiers} targets (docs/verify-by-hand.md).",
                   "账本头（第 {head} 段）以检查点锚定在 {targets} 个存储目标中的 {anchored} 个上（共 {checkpoints} "
                   "个检查点）；与目录一致：{agree}。只需 Python 标准库的核验脚本存放在 {verifiers} 个存储目标上"
                   "（docs/verify-by-hand.md）。"),
    "find.4.4.1.2": ("{checks} fixity checks; {audited} of {copies} copies audited, {not_audited} never or not "
                     "recently audited. Restore drills: {drilled} of {targets} targets drilled, {drill_failed} with "
                     "a failed last drill.",
                     "{checks} 次固定性检查；{copies} 份副本中 {audited} 份已审计，{not_audited} 份从未或近期未审计。"
                     "恢复演练：{targets} 个存储目标中 {drilled} 个已演练，{drill_failed} 个最近一次演练失败。"),
    "find.4.4.2": ("The ledger holds {events} events in {segments} hash-chained segments, {intact}; head sha256 "
                   "{head_hash}. Every event names the program that acted; {with_operator} also name the operator.",
                   "账本共有 {events} 个事件，分为 {segments} 个哈希链段，{intact}；账本头 sha256 {head_hash}。"
                   "每个事件都记录执行的程序；其中 {with_operator} 个还记录了操作员。"),
    "find.4.6.1.1": ("Restores recorded: {restores}, of which failed: {restore_failed}; governance requests that "
                     "failed to execute: {request_failed}.",
                     "已记录 {restores} 次恢复，其中 {restore_failed} 次失败；{request_failed} 个治理请求执行失败。"),
    "find.5.1.1.3": ("Deep audits and drills re-hash every file with its policy's digests ({algorithms}). Damage "
                     "found: {damage}. Deep re-reads cover {cov365} of the bytes held in 365 days; {drilled} "
                     "targets were restore-drilled.",
                     "深度审计与演练用策略规定的摘要（{algorithms}）重新计算每个文件的摘要。已发现 {damage} 处损坏。"
                     "近 365 天深度重读覆盖所持字节的 {cov365}；{drilled} 个存储目标做过恢复演练。"),
    "find.5.1.1.3.1": ("Damage recorded: {damage}; repaired from a good copy: {repaired}; findings still open: "
                       "{open}; repair events: {repairs}.",
                       "已记录 {damage} 处损坏，{repaired} 处已用完好副本修复，{open} 项发现仍未解决；修复事件 {repairs} 个。"),
    "find.5.1.2": ("{copies} copies in {sites} separate locations ({targets} targets; targets sharing a file "
                   "system, bucket or site count as one); bags with fewer good copies than their policy asks: "
                   "{short}; policies requiring distinct sites: {distinct}.",
                   "{copies} 份副本位于 {sites} 个独立位置（{targets} 个存储目标；共用文件系统、存储桶或地点的目标"
                   "算作一个）；{short} 个包的完好副本少于策略要求；"
                   "要求不同地点的策略：{distinct}。"),
    "find.5.1.2.1": ("{verified} of {copies} copies match the catalog's digests now (verified or repaired); "
                     "damaged, missing, disputed or not yet verified: {problem}; repairs that brought copies back in "
                     "line: {repairs}.",
                     "{copies} 份副本中 {verified} 份当前与目录摘要一致（已验证或已修复）；{problem} 份损坏、缺失、"
                     "有争议或尚未验证；{repairs} 次修复使副本恢复一致。"),
    "find.5.2.4": ("Restore drills: the last drill passed on {ok} of {targets} targets ({never} never drilled). "
                   "Copies are in {sites} separate locations. The catalog, with its events, can be rebuilt from the targets "
                   "(ledger checkpoints on {anchored} targets).",
                   "恢复演练：{targets} 个存储目标中 {ok} 个最近一次演练通过（{never} 个从未演练）。副本分布在 "
                   "{sites} 个独立位置。目录及其事件可从存储目标重建（{anchored} 个存储目标上有账本检查点）。"),
    "find.R07": ("Every ingest, check, repair and restore is an event in the hash-chained ledger ({intact}), "
                 "anchored on {anchored} targets; bag manifests carry {algorithms} digests.",
                 "每次接收、检查、修复和恢复都是哈希链账本中的事件（{intact}），锚定在 {anchored} 个存储目标上；"
                 "包清单带有 {algorithms} 摘要。"),
    "find.R14": ("{copies} copies in {sites} separate locations; {checks} fixity checks; {cov365} of the bytes held re-read deep "
                 "in 365 days; the last restore drill passed on {ok} of {targets} targets.",
                 "{copies} 份副本位于 {sites} 个独立位置；{checks} 次固定性检查；近 365 天深度重读所持字节的 {cov365}；"
                 "{targets} 个存储目标中 {ok} 个最近一次恢复演练通过。"),
    # what it cannot show
    "cannot.3.3.5": ("Whether this cadence suits the repository's risks is a policy decision, documented outside "
                     "the catalog.", "这一检查周期是否适合本机构的风险，是策略层面的决定，需在目录之外记录。"),
    "cannot.4.1.6": ("Legal control (deposit agreements, licences, the right to copy) is not recorded in the catalog.",
                     "法律上的控制（缴存协议、许可、复制权）不记录在目录中。"),
    "cannot.4.2.9": ("Completeness against the depositor's own inventory: what was never deposited cannot be seen "
                     "by checking what was.", "相对于缴存方自有清单的完整性：从未缴存的内容无法通过检查已缴存内容发现。"),
    "cannot.4.4.1.2": ("Whether people act on the findings in time shows only in the repairs recorded (5.1.1.3.1).",
                       "人员是否及时处理发现的问题，只能从已记录的修复看出（5.1.1.3.1）。"),
    "cannot.4.4.2": ("Actions taken outside Strongroom (decisions in meetings, manual changes to storage) leave no "
                     "record here.", "在 Strongroom 之外采取的行动（会议决定、对存储的手工改动）在此没有记录。"),
    "cannot.4.6.1.1": ("A restore refused before anything is read (another library's bag, a dark collection) ends "
                       "with exit 2 and is not written to the ledger; reviewing anomalies is people's work.",
                       "在读取任何内容之前就被拒绝的恢复（其他图书馆的包、暗存馆藏）以退出码 2 结束，不写入账本；"
                       "审查异常是人员的工作。"),
    "cannot.5.1.1.3": ("Corruption of a copy that no deep audit or drill has re-read since it happened is not yet "
                       "known (see the coverage).", "损坏发生后尚未被深度审计或演练重读过的副本，其损坏尚不可知（见覆盖率）。"),
    "cannot.5.1.1.3.1": ("That the administration read the reports is not recorded.", "管理层是否阅读了报告没有记录。"),
    "cannot.5.1.2": ("Whether the sites are truly independent (power, floods, one provider) beyond their names in "
                     "the config.", "除配置中的名称外，各地点是否真正独立（电力、洪水、同一供应商）无法证明。"),
    "cannot.5.1.2.1": ("How long a new deposit takes to reach every copy is not measured.",
                       "新缴存内容到达每份副本所需的时间没有测量。"),
    "cannot.5.2.4": ("The written disaster plan, its off-site copy and the staff's readiness are not in the catalog.",
                     "成文的灾难预案、其异地副本以及人员的准备情况不在目录中。"),
    "cannot.R07": ("Provenance before deposit is only what the depositor wrote in bag-info.",
                   "缴存之前的来源只有缴存方在 bag-info 中填写的内容。"),
    "cannot.R14": ("Storage media, hardware refresh and the provider's own guarantees are outside the catalog.",
                   "存储介质、硬件更新以及服务商自身的保证不在目录范围内。"),
    # drills and anchors tables
    "dcol.target": ("Target", "存储目标"),
    "dcol.site": ("Site", "地点"),
    "dcol.last": ("Last drill", "最近演练"),
    "dcol.run": ("Run (seed)", "演练批次（种子）"),
    "dcol.outcome": ("Result", "结果"),
    "dcol.bags": ("Bags", "包"),
    "dcol.failed": ("Failed", "失败"),
    "dcol.bytes": ("Bytes verified", "已校验字节"),
    "dcol.checkpoints": ("Checkpoints", "检查点"),
    "dcol.anchored": ("Anchored up to segment", "已锚定至段"),
    "dcol.agrees": ("Agrees with the catalog", "与目录一致"),
    "dcol.verifiers": ("Verifier copies", "核验脚本副本"),
    "dcol.note": ("Note", "说明"),
    "drill.never": ("never drilled", "从未演练"),
    "drill.none": ("No restore drill is recorded (`strongroom drill` restores a sample from each target and "
                   "verifies it).", "没有恢复演练记录（`strongroom drill` 从每个存储目标恢复一部分样本并校验）。"),
    "drill.success": ("passed", "通过"),
    "drill.failure": ("FAILED", "失败"),
    "empty.no_targets": ("No storage target is configured.", "未配置存储目标。"),
}

__all__ = ["EVIDENCE_MESSAGES", "REQUIREMENTS"]
