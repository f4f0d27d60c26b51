"""The governance words of the preservation report (access states, entitlements, requests), in
English and Simplified Chinese: a part of reports.i18n.MESSAGES kept in its own file, merged
into it there, so a missing translation is still a KeyError at rendering."""

from __future__ import annotations

from typing import Dict, Tuple

GOVERNANCE_MESSAGES: Dict[str, Tuple[str, str]] = {
    "sec.governance": ("Access and governance", "访问与治理"),
    "note.governance": ("Purchased collections stay dark (preserved, audited and repaired, but not handed out) "
                        "until a trigger request, signed by the governance quorum, releases them to their entitled "
                        "libraries; self-built collections are open to their owner library. Audits and repairs "
                        "never depend on the access state.",
                        "购买的馆藏保持“暗存档”状态（照常保存、审计和修复，但不对外提供），直到经治理法定人数签名"
                        "批准的触发请求将其开放给享有权益的图书馆；自建馆藏只向其所属图书馆开放。审计与修复从不受"
                        "访问状态影响。"),
    "note.governance_off": ("This archive's config has no governance: section: the access states below are shown "
                            "but restore does not enforce them.",
                            "本存档的配置中没有 governance: 部分：下列访问状态仅作展示，恢复操作不会据此限制。"),
    "sub.access_states": ("Access states", "访问状态"),
    "sub.entitlements": ("Entitlements (perpetual-access rights)", "权益（永久访问权）"),
    "sub.requests": ("Requests and approvals", "请求与审批"),
    "col.access_state": ("Access state", "访问状态"),
    "col.released_to": ("Released to", "开放给"),
    "col.titles": ("Titles", "题名"),
    "col.years": ("Years", "年份"),
    "col.request": ("Request", "请求"),
    "col.requester": ("Requested by", "请求人"),
    "col.approvers": ("Approvers", "批准人"),
    "col.quorum": ("Quorum", "法定人数"),
    "col.executed": ("Executed", "执行时间"),
    "access.dark": ("dark", "暗存档"),
    "access.open-to-owner": ("open to owner", "向所属馆开放"),
    "access.released": ("released", "已开放"),
    "req.trigger": ("trigger release", "触发开放"),
    "req.withdraw": ("withdrawal", "撤除"),
    "req.legal-hold": ("legal hold", "法律保全"),
    "req.release-hold": ("release of a legal hold", "解除法律保全"),
    "req.state.pending": ("pending", "待批准"),
    "req.state.executed": ("executed", "已执行"),
    "req.state.expired": ("expired", "已过期"),
    "word.all_titles": ("all titles", "全部题名"),
    "word.all_years": ("all years", "全部年份"),
    "empty.no_entitlements": ("No entitlements recorded.", "没有记录任何权益。"),
    "empty.no_requests": ("No requests.", "没有请求。"),
    "etype.policy assignment": ("policy assignment", "策略分配"),
    "etype.request": ("request", "请求"),
    "etype.digital signature validation": ("digital signature validation", "数字签名验证"),
    "etype.request execution": ("request execution", "请求执行"),
}

__all__ = ["GOVERNANCE_MESSAGES"]
