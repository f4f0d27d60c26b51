"""The NDSA Levels words of the reports (areas, levels, every rule and finding), in English and
Simplified Chinese: a part of reports.i18n.MESSAGES kept in its own file (the rule texts are
long), merged into it there, so a missing translation is still a KeyError at rendering."""

from __future__ import annotations

from typing import Dict, Tuple

NDSA_MESSAGES: Dict[str, Tuple[str, str]] = {
    # NDSA
    "area.storage": ("Storage", "存储"),
    "area.integrity": ("Integrity", "完整性"),
    "area.control": ("Control", "控制"),
    "area.metadata": ("Metadata", "元数据"),
    "area.content": ("Content", "内容"),
    "level.n": ("Level {n}", "第 {n} 级"),
    "level.name.0": ("level 1 not reached", "未达到第 1 级"),
    "level.name.1": ("Know your content", "了解内容"),
    "level.name.2": ("Protect your content", "保护内容"),
    "level.name.3": ("Monitor your content", "监测内容"),
    "level.name.4": ("Sustain your content", "持续保存内容"),
    "ndsa.evidence": ("Evidence:", "依据："),
    "ndsa.missing": ("Missing for {level}:", "达到{level}尚缺："),
    "ndsa.top": ("The highest level is reached.", "已达到最高级别。"),
    "ndsa.attest": ("Also asked by the NDSA, not evidenced by Strongroom (attest separately):",
                    "NDSA 还要求以下各项，Strongroom 无法提供证据（需另行证明）："),
    "ndsa.not_evidenced_short": ("not recorded in the catalog", "目录中没有记录"),
    "ndsa.storage.media": ("Document the storage media and the resources they depend on (levels 1-2)",
                           "记录存储介质及其所依赖的资源（第 1-2 级）"),
    "ndsa.storage.obsolescence": ("Monitor and act on the obsolescence of storage hardware, software and media "
                                  "(levels 3-4)", "监测并应对存储硬件、软件和介质的过时问题（第 3-4 级）"),
    "ndsa.integrity.write_blocker": ("Write-blockers when working with original media (level 2)",
                                     "处理原始介质时使用写保护装置（第 2 级）"),
    "ndsa.integrity.write_access": ("No one person has write access to all copies (level 4; S3 Object Lock "
                                    "with a retention policy helps)",
                                    "没有任何一个人拥有全部副本的写权限（第 4 级；配合保留策略的 S3 对象锁定"
                                    "有助于实现）"),
    "ndsa.control.authorisation": ("Decide, document and enforce who may read, write, move and delete content "
                                   "(levels 1-2)", "确定、记录并落实可读取、写入、移动和删除内容的人员与软件"
                                                   "（第 1-2 级）"),
    "ndsa.control.review": ("Review the action and access logs periodically (level 4); keep this report's "
                            "ledger head hash with the review record",
                            "定期审查操作与访问日志（第 4 级）；请将本报告的账本头哈希与审查记录一并保存"),
    "ndsa.metadata.standards": ("Choose the descriptive metadata standards for the collection (level 3)",
                                "确定馆藏适用的描述元数据标准（第 3 级）"),
    "ndsa.content.migration": ("Migrate, normalise or emulate at-risk content (level 4): done outside Strongroom",
                               "对高风险内容进行迁移、规范化或仿真（第 4 级）：在 Strongroom 之外进行"),
    "ndsa.ledger.intact": ("ledger intact", "账本完好"),
    "ndsa.ledger.altered": ("LEDGER ALTERED", "账本已被篡改"),
    # NDSA rules and findings
    "ndsa.storage.two_copies.rule": ("Every bag has at least 2 verified copies in separate locations (targets on "
                                     "one file system or in one bucket are one location)",
                                     "每个包至少有 2 个已验证副本，位于不同的位置（同一文件系统或同一存储桶上的存储目标算作一个位置）"),
    "ndsa.storage.two_copies.finding": ("{copies} verified copies of each bag in {locations} location(s); policy "
                                        "targets: {targets}",
                                        "每个包有 {copies} 个已验证副本，位于 {locations} 个位置；策略指定的存储目标：{targets}"),
    "ndsa.storage.three_copies.rule": ("Every bag has at least 3 verified copies", "每个包至少有 3 个已验证副本"),
    "ndsa.storage.three_copies.finding": ("{copies} verified copies of each bag", "每个包有 {copies} 个已验证副本"),
    "ndsa.storage.two_sites.rule": ("Every bag's verified copies span at least 2 sites (one in a separate location)",
                                    "每个包的已验证副本至少分布在 2 个站点（至少一个异地副本）"),
    "ndsa.storage.two_sites.finding": ("verified copies of each bag on {sites} separate sites ({names})",
                                       "每个包的已验证副本分布在 {sites} 个站点（{names}）"),
    "ndsa.storage.three_sites.rule": ("Every bag's verified copies span at least 3 sites, so one disaster takes at "
                                      "most one of them",
                                      "每个包的已验证副本至少分布在 3 个站点，一次灾害最多损失其中一个"),
    "ndsa.storage.three_sites.finding": ("verified copies of each bag on {sites} separate sites ({names})",
                                         "每个包的已验证副本分布在 {sites} 个站点（{names}）"),
    "ndsa.storage.diverse.rule": ("Every bag's verified copies use at least 2 kinds of storage (e.g. filesystem "
                                  "and S3)", "每个包的已验证副本至少使用 2 种存储类型（如文件系统与 S3）"),
    "ndsa.storage.diverse.finding": ("{kinds} kind(s) of storage per bag: {types}", "每个包使用 {kinds} 种存储类型：{types}"),
    "ndsa.storage.all_required.rule": ("Every copy the policy asks for is present and verified",
                                       "策略要求的每个副本都存在且已验证"),
    "ndsa.storage.all_required.finding": ("{bad} copies damaged, failed or missing; {absent} absent; {unverified} "
                                          "unverified", "{bad} 个副本损坏、失败或缺失；{absent} 个未记录；"
                                                        "{unverified} 个未验证"),
    "ndsa.integrity.digests.rule": ("Every file has its policy's primary digest, computed at ingest",
                                    "每个文件都有其策略规定的主校验值（接收时计算）"),
    "ndsa.integrity.digests.finding": ("{files} files; {missing} without a {digests} digest",
                                       "{files} 个文件；{missing} 个缺少 {digests} 校验值"),
    "ndsa.integrity.virus_check.rule": ("All content was virus-checked (ClamAV) and nothing infected was "
                                        "kept: infected deposits stay in quarantine",
                                        "所有内容都经过病毒检查（ClamAV），且未保存任何感染文件：感染的提交保留在隔离区"),
    "ndsa.integrity.virus_check.finding": ("{checked} of {bags} bags virus-checked clean ({files} files scanned); "
                                           "{infected} infected; signature database {db}, {age} day(s) old",
                                           "{bags} 个包中 {checked} 个经病毒检查无感染（扫描 {files} 个文件）；"
                                           "{infected} 个感染；病毒库 {db}，已有 {age} 天"),
    "ndsa.integrity.verified_copies.rule": ("Every copy was verified after copying (every file re-hashed on the "
                                            "stored copy)", "每个副本复制后都经过验证（对存储的副本重新计算每个文件的"
                                                            "校验值）"),
    "ndsa.integrity.verified_copies.finding": ("{copies} copies verified after writing; {unverified} not verified",
                                               "{copies} 个副本写入后已验证；{unverified} 个未验证"),
    "ndsa.integrity.deep_cadence.rule": ("Every verified copy had a deep audit (every file re-hashed) within its "
                                         "cadence", "每个已验证副本都在规定周期内完成了深度审计（重新计算每个文件的"
                                                    "校验值）"),
    "ndsa.integrity.deep_cadence.finding": ("deep audit every {every}; last deep audits from {oldest} to {newest}; "
                                            "{overdue} overdue", "深度审计周期 {every}；最近一次深度审计在 {oldest} "
                                                                 "至 {newest} 之间；{overdue} 个逾期"),
    "ndsa.integrity.fixity_log.rule": ("Every bag's fixity checks are logged in the hash-chained ledger, which "
                                       "verifies intact", "每个包的固定性检查都记录在哈希链账本中，且账本验证完好"),
    "ndsa.integrity.fixity_log.finding": ("{events} fixity check events; {bags} bags without one; {ledger}",
                                          "{events} 条固定性检查事件；{bags} 个包没有此类事件；{ledger}"),
    "ndsa.integrity.no_damage.rule": ("No copy is damaged, failed or missing (damage found was repaired)",
                                      "没有损坏、失败或缺失的副本（发现的损坏均已修复）"),
    "ndsa.integrity.no_damage.finding": ("{bad} copies damaged, failed or missing now; {repairs} repairs in the "
                                         "period", "当前有 {bad} 个副本损坏、失败或缺失；本期修复 {repairs} 次"),
    "ndsa.integrity.quick_cadence.rule": ("Every verified copy is within its quick-check cadence too",
                                          "每个已验证副本也都在快速检查周期之内"),
    "ndsa.integrity.quick_cadence.finding": ("quick check every {every}; {overdue} overdue",
                                             "快速检查周期 {every}；{overdue} 个逾期"),
    "ndsa.control.policy_known.rule": ("The collection's policy is known and names the targets allowed to hold it",
                                       "馆藏的保存策略已知，并指定了允许存放的存储目标"),
    "ndsa.control.policy_known.finding": ("policies: {policies}; targets: {targets}; unknown policies: {unknown}",
                                          "策略：{policies}；存储目标：{targets}；未知策略：{unknown}"),
    "ndsa.control.only_allowed.rule": ("Copies exist only on targets the policy names",
                                       "副本只存在于策略指定的存储目标上"),
    "ndsa.control.only_allowed.finding": ("{extra} copies on other targets", "{extra} 个副本位于其他存储目标"),
    "ndsa.control.agents_logged.rule": ("Every logged action names its agent, every ingestion is logged, and the "
                                        "ledger verifies intact",
                                        "每条记录的操作都注明执行者，每次接收都有记录，且账本验证完好"),
    "ndsa.control.agents_logged.finding": ("{events} events, {without} without an agent; {bags} bags without an "
                                           "ingestion event; {ledger}",
                                           "{events} 条事件，{without} 条未注明执行者；{bags} 个包缺少接收事件；"
                                           "{ledger}"),
    "ndsa.control.log_review.rule": ("Action logs are reviewed periodically", "定期审查操作日志"),
    "ndsa.control.log_review.finding": ("not recorded in the catalog", "目录中没有记录"),
    "ndsa.metadata.inventory.rule": ("The catalog inventories every file, and every bag has a verified copy "
                                     "carrying its own manifests (an inventory kept apart from the catalog)",
                                     "目录清点了每个文件，且每个包都有带自身清单的已验证副本（清单在目录之外另有"
                                     "备份）"),
    "ndsa.metadata.inventory.finding": ("{files} of {declared} files inventoried; {copies} verified copies carry "
                                        "BagIt manifests", "已清点 {files}/{declared} 个文件；{copies} 个已验证"
                                                           "副本带有 BagIt 清单"),
    "ndsa.metadata.enough.rule": ("Every bag has a title (descriptive) and every file a format identification "
                                  "record (technical)", "每个包都有题名（描述元数据），每个文件都有格式识别记录"
                                                        "（技术元数据）"),
    "ndsa.metadata.enough.finding": ("{untitled} of {bags} bags without a title; {noid} files without format "
                                     "identification", "{bags} 个包中 {untitled} 个没有题名；{noid} 个文件没有"
                                                       "格式识别记录"),
    "ndsa.metadata.standards.rule": ("Standards applied without gaps: every ingestion logged (BagIt and PREMIS 3 "
                                     "written into every bag) and every file identified to a PRONOM format",
                                     "按标准著录且无缺漏：每次接收都有记录（每个包都写入 BagIt 与 PREMIS 3 元数据），"
                                     "每个文件都识别到 PRONOM 格式"),
    "ndsa.metadata.standards.finding": ("{bags} bags without an ingestion event; {unidentified} files unidentified",
                                        "{bags} 个包缺少接收事件；{unidentified} 个文件未识别"),
    "ndsa.metadata.actions.rule": ("Preservation actions are recorded with their dates: ingestion, replication "
                                   "and fixity check events for every bag, in an intact ledger",
                                   "保存操作均带日期记录：每个包都有接收、复制和固定性检查事件，且账本完好"),
    "ndsa.metadata.actions.finding": ("{events} events; bags without ingestion {ingestion}, without replication "
                                      "{replication}, without fixity check {fixity}; {ledger}",
                                      "{events} 条事件；缺少接收事件的包 {ingestion} 个，缺少复制事件的 "
                                      "{replication} 个，缺少固定性检查事件的 {fixity} 个；{ledger}"),
    "ndsa.content.documented.rule": ("Every file's format identification is recorded, with how it was made",
                                     "每个文件的格式识别结果及识别方式都有记录"),
    "ndsa.content.documented.finding": ("identified by {methods}; {noid} files without a record",
                                        "识别方式：{methods}；{noid} 个文件无记录"),
    "ndsa.content.identified.rule": ("Every file is identified to a PRONOM format (PUID)",
                                     "每个文件都识别到 PRONOM 格式（PUID）"),
    "ndsa.content.identified.finding": ("{unidentified} of {files} files unidentified",
                                        "{files} 个文件中 {unidentified} 个未识别"),
    "ndsa.content.watch.rule": ("Each policy keeps a list of formats at risk of obsolescence",
                                "每个策略都有一份面临过时风险的格式清单"),
    "ndsa.content.watch.finding": ("{watched} at-risk formats watched; policies without a list: {without}",
                                   "监测 {watched} 种高风险格式；没有清单的策略：{without}"),
    "ndsa.content.no_at_risk.rule": ("No file is in a format its policy lists as at risk (nothing awaits "
                                     "migration)", "没有文件采用其策略列为高风险的格式（没有待迁移的内容）"),
    "ndsa.content.no_at_risk.finding": ("{files} files ({bytes}) in at-risk formats",
                                        "{files} 个文件（{bytes}）采用高风险格式"),
}
