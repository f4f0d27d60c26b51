"""The format report: files and bytes per PRONOM format (PUID, name, version), the files no
signature recognised, and the files in formats their policy lists as at risk, per collection and
overall, with how each file was identified.

All figures come from one streamed aggregate of the files table (reports.scan): one row per
collection x format x identification method, whatever the number of files. "At risk" is
decided per file by the policy of its bag (`formats.at_risk`), so the same PUID can be at risk in
one collection and not in another; the overall table counts the at-risk files of each format.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import pyarrow as pa
import pyarrow.compute as pc

from catalog.access import open_catalog
from catalog.catalog import Catalog
from reports.common import Scope, make_scope, plain, select_bags
from reports.scan import file_aggregate

FORMAT_KEYS = ["puid", "format_name", "format_version"]
TOP_FORMATS_CHART = 15


@dataclass
class FormatReport:
    kind: str
    catalog: str
    generated_at: _dt.datetime
    scope: Scope
    totals: Dict[str, int]
    formats: List[Dict[str, Any]]          # overall: puid, format_name, format_version, files, bytes, at_risk_*
    collections: List[Dict[str, Any]]      # library, collection, files, bytes, formats, unidentified_*, at_risk_*
    by_collection: List[Dict[str, Any]]    # library, collection + the format columns
    unidentified: List[Dict[str, Any]]     # library, collection, files, bytes
    at_risk: List[Dict[str, Any]]          # library, collection, policy, puid, format_name, format_version, files, bytes
    methods: List[Dict[str, Any]]          # identification_method, files, bytes
    policies: List[Dict[str, Any]]         # policy, at_risk PUIDs, unidentified rule

    def to_dict(self) -> Dict[str, Any]:
        data = plain(self)
        data["scope"] = self.scope.to_dict()
        return data


def build_formats(config, catalog: Optional[Catalog] = None, scope: Optional[Scope] = None) -> FormatReport:
    catalog = catalog if catalog is not None else open_catalog(config)
    scope = scope or make_scope()
    bags = select_bags(catalog, scope)
    agg = file_aggregate(config, catalog, bags)
    risk = agg.column("at_risk")
    zero = pa.scalar(0, pa.int64())
    agg = agg.append_column("at_risk_files", pc.if_else(risk, agg.column("files"), zero))
    agg = agg.append_column("at_risk_bytes", pc.if_else(risk, agg.column("bytes"), zero))
    unknown = pc.is_null(agg.column("puid"))
    agg = agg.append_column("unidentified_files", pc.if_else(unknown, agg.column("files"), zero))
    agg = agg.append_column("unidentified_bytes", pc.if_else(unknown, agg.column("bytes"), zero))
    values = ["files", "bytes", "at_risk_files", "at_risk_bytes"]

    formats = _sums(agg, FORMAT_KEYS, values, order=[("files", "descending"), ("bytes", "descending")])
    by_collection = _sums(agg, ["library", "collection"] + FORMAT_KEYS, values,
                          order=[("library", "ascending"), ("collection", "ascending"), ("files", "descending")])
    coll_values = values + ["unidentified_files", "unidentified_bytes"]
    collections = _sums(agg, ["library", "collection"], coll_values)
    distinct = {}
    if agg.num_rows:
        known = agg.filter(pc.is_valid(agg.column("puid")))
        if known.num_rows:
            for r in known.group_by(["library", "collection"]).aggregate([("puid", "count_distinct")]).to_pylist():
                distinct[(r["library"], r["collection"])] = r["puid_count_distinct"]
    for c in collections:
        c["formats"] = distinct.get((c["library"], c["collection"]), 0)
    totals = _sums(agg, [], coll_values)[0]
    totals["formats"] = len({f["puid"] for f in formats if f["puid"] is not None})
    totals["collections"] = len(collections)
    totals["bags"] = bags.num_rows

    used = sorted(pc.unique(bags.column("policy")).to_pylist()) if bags.num_rows else []
    policies = [{"policy": name, "known": name in config.policies,
                 "at_risk": list(config.policies[name].formats.at_risk) if name in config.policies else [],
                 "unidentified": config.policies[name].formats.unidentified if name in config.policies else None}
                for name in used]
    return FormatReport(
        kind="formats", catalog=catalog.location, generated_at=scope.now, scope=scope, totals=totals,
        formats=formats, collections=collections, by_collection=by_collection,
        unidentified=[{"library": c["library"], "collection": c["collection"], "files": c["unidentified_files"],
                       "bytes": c["unidentified_bytes"]} for c in collections if c["unidentified_files"]],
        at_risk=_sums(agg.filter(risk), ["library", "collection", "policy"] + FORMAT_KEYS, ["files", "bytes"])
        if agg.num_rows else [],
        methods=_sums(agg, ["identification_method"], ["files", "bytes"], order=[("files", "descending")]),
        policies=policies)


def _sums(table: pa.Table, keys: List[str], values: List[str], order=None) -> List[Dict[str, Any]]:
    if not keys:
        return [{v: int(pc.sum(table.column(v)).as_py() or 0) for v in values}]
    if table.num_rows == 0:
        return []
    agg = table.group_by(keys, use_threads=False).aggregate([(v, "sum") for v in values])
    agg = agg.rename_columns(keys + values)
    agg = agg.sort_by((order or []) + [(k, "ascending") for k in keys])
    return agg.to_pylist()
