"""What every report shares: its scope (library, collection, period), the bags in it, and the
few plain-value helpers the writers use.

A report is read-only over the catalog and the config. Its *period* (`--since`, `--until`)
bounds the activity it lists (audits, damage, repairs, events); the *state* it shows (copies,
overdue audits, NDSA levels) is the state at `generated_at`, because the replica log and the
ledger can say what is true now, and an auditor signs off on the state as it is.

Dates on the command line are people's dates: `2026-01-31` means that whole day (`--since`
from its first instant, `--until` up to the end of it), in UTC; an ISO date-time
(`2026-01-31T12:00:00Z`, or with an offset) means that instant, and a date-time without an
offset is taken as UTC. `since` is inclusive, `until` exclusive, as in `Catalog.events`.
"""

from __future__ import annotations

import datetime as _dt
import io
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TextIO

import pyarrow as pa
import pyarrow.compute as pc

from catalog.catalog import Catalog
from strongroom.errors import UsageError

KINDS = ("preservation", "fixity", "formats")
FORMATS = ("html", "csv", "json", "premis")
LANGS = ("en", "zh")
SUFFIX = {"html": ".html", "csv": ".csv", "json": ".json", "premis": ".xml"}

UTC = _dt.timezone.utc


@dataclass(frozen=True)
class Scope:
    """Which bags a report covers and over which period; `now` is the report's own time."""

    library: Optional[str]
    collection: Optional[str]
    since: Optional[_dt.datetime]
    until: Optional[_dt.datetime]
    now: _dt.datetime
    # The library is in the config's registry (`libraries:`): one with no bags yet has an empty
    # report, not the "no library in the catalog" usage error meant for a mistyped code.
    listed: bool = False

    def to_dict(self) -> Dict[str, Any]:
        return {"library": self.library, "collection": self.collection,
                "since": iso(self.since), "until": iso(self.until)}


def parse_when(text: Optional[str], option: str, *, end_of_day: bool = False) -> Optional[_dt.datetime]:
    """A `--since`/`--until` value as an aware UTC datetime; UsageError (exit 2) naming the option."""
    if text is None:
        return None
    value = text.strip()
    try:
        if len(value) == 10:
            day = _dt.date.fromisoformat(value)
            start = _dt.datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start + _dt.timedelta(days=1) if end_of_day else start
        parsed = _dt.datetime.fromisoformat(value[:-1] + "+00:00" if value[-1:] in "Zz" else value)
    except ValueError:
        raise UsageError(f"{text!r} is not a date; write YYYY-MM-DD (a whole day, UTC) or an ISO 8601 "
                         f"date-time such as 2026-01-31T12:00:00Z", key=option) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def make_scope(*, library: Optional[str] = None, collection: Optional[str] = None,
               since: Any = None, until: Any = None, now: Optional[_dt.datetime] = None,
               listed: bool = False) -> Scope:
    """A Scope from CLI strings or datetimes; UsageError when the period is empty or backwards."""
    s = since if isinstance(since, _dt.datetime) or since is None else parse_when(since, "--since")
    u = until if isinstance(until, _dt.datetime) or until is None else parse_when(until, "--until", end_of_day=True)
    for name, value in (("--since", s), ("--until", u)):
        if value is not None and value.tzinfo is None:
            raise UsageError("must be timezone-aware", key=name)
    if s is not None and u is not None and s >= u:
        raise UsageError(f"the period is empty: --since {since} (from {iso(s)}) is not before --until {until} "
                         f"(up to {iso(u)}, exclusive)", key="--since")
    now = (now or _dt.datetime.now(UTC)).astimezone(UTC)
    return Scope(library=library, collection=collection, since=None if s is None else s.astimezone(UTC),
                 until=None if u is None else u.astimezone(UTC), now=now, listed=listed and library is not None)


def select_bags(catalog: Catalog, scope: Scope) -> pa.Table:
    """The bags in scope. An unknown library or collection is a usage error naming what exists, so
    a typo is not mistaken for an empty archive; an empty catalog with no filter is a valid report."""
    bags = catalog.bags(scope.library, scope.collection)
    if bags.num_rows == 0 and scope.listed and scope.collection is None:
        return bags
    if bags.num_rows == 0 and (scope.library is not None or scope.collection is not None):
        everything = catalog.bags()
        pairs = sorted(set(zip(everything.column("library").to_pylist(),
                               everything.column("collection").to_pylist())))
        libraries = sorted({lib for lib, _ in pairs})
        if scope.library is not None and scope.library not in libraries:
            raise UsageError(f"no library {scope.library!r} in the catalog (libraries: "
                             f"{', '.join(libraries) or 'none, the catalog is empty'})", key="--library")
        known = ", ".join(f"{lib}/{coll}" for lib, coll in pairs
                          if scope.library is None or lib == scope.library) or "none"
        raise UsageError(f"no collection {scope.collection!r}"
                         f"{'' if scope.library is None else ' in library ' + repr(scope.library)} "
                         f"(collections: {known})", key="--collection")
    return bags


def in_period(table: pa.Table, column: str, scope: Scope) -> pa.Table:
    """Rows whose `column` timestamp falls in [since, until)."""
    mask = None
    col = table.column(column)
    if scope.since is not None:
        mask = pc.greater_equal(col, pa.scalar(scope.since, col.type))
    if scope.until is not None:
        m = pc.less(col, pa.scalar(scope.until, col.type))
        mask = m if mask is None else pc.and_(mask, m)
    return table if mask is None else table.filter(mask)


def lookup(table: pa.Table, keys: List[str], ref: pa.Table, ref_keys: List[str], columns: List[str]) -> pa.Table:
    """`table` with `columns` of `ref` appended where the keys match (null where none does): a left
    join that keeps `table`'s rows and order, done as a value lookup (`index_in` + `take`), which
    needs far less memory than a hash join on tables of events (ref keys must be unique)."""
    index = pc.index_in(_key(table, keys), value_set=_key(ref, ref_keys))
    for name in columns:
        table = table.append_column(name, ref.column(name).take(index))
    return table


def _key(table: pa.Table, keys: List[str]) -> pa.Array:
    """One key column: the column itself, or the columns joined with a separator (null if any is)."""
    cols = [table.column(k) for k in keys]
    key = cols[0] if len(cols) == 1 else pc.binary_join_element_wise(*cols, "\x1f")
    return key.combine_chunks() if isinstance(key, pa.ChunkedArray) else key


def iso(value: Optional[_dt.datetime]) -> Optional[str]:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def plain(value: Any) -> Any:
    """JSON-ready values: dataclasses to dicts, datetimes to ISO 8601 UTC, durations to days."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, _dt.datetime):
        return iso(value)
    if isinstance(value, _dt.timedelta):
        return value.total_seconds() / 86400
    return value


def check_output(path: Path) -> Path:
    """The output path, or UsageError (exit 2) when its folder is missing or it is a folder."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"folder {folder} does not exist; create it first", key="-o")
    if path.is_dir():
        raise UsageError(f"{path} is a folder; give a file name", key="-o")
    return path


def write_atomic(path: Path, write: Callable[[TextIO], None]) -> Path:
    """Call `write(text_file)` on a temp file beside `path`, then rename it into place
    (strongroom.durable): a reader, or a crash, sees the old report or the new one, never half."""
    from strongroom.durable import atomic_writer

    path = check_output(path)
    with atomic_writer(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        write(text)
        text.flush()
        text.detach()
    return path
