"""A library's receiving area: the S3 bucket (or prefix) or folder it uploads its batches into.

Why a module of its own rather than a storage target: a receiving area belongs to the library,
not to the archive. It is reached with that library's credentials only (never the service's, and
never the default AWS credential chain, which on the service's machine could be the service's
own keys), its keys are written by outsiders (so every key is checked as untrusted), and the
archive writes only its answers there (`.claim`, `.done`, `.failed`), each atomically and, unless
asked, never over something already there (S3: PUT with `If-None-Match: *`; folder: a temp file
renamed with RENAME_NOREPLACE).

S3 requests go through `storage_adapters.s3.S3Adapter` (its retries, resumable GETs, credential
redaction and error wording); a folder area never follows a symbolic link and lists only
regular files.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator, List, Mapping, Optional, Tuple

from strongroom.errors import ConfigError, UsageError

from .base import NotFound, StorageError, check_relpath
from .fs_common import is_temp_name, temp_name, what_is
from .safe_open import rename_noreplace

_NOFOLLOW = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class AreaObject:
    """One uploaded object: its key relative to the area, its size, the S3 ETag (quotes
    stripped; None for a folder area), and `odd`: in a folder area, what a non-regular entry is
    ("a symbolic link", "a FIFO"...; never read, listed so that `receive` can refuse it)."""

    key: str
    size: int
    etag: Optional[str] = None
    odd: Optional[str] = None


def check_key(key: str) -> str:
    """The key itself, or ValueError naming why an uploaded name cannot be taken as a path."""
    check_relpath(key)
    return key


class ReceivingArea:
    """The operations `receive` and `report --publish` need; see the two implementations."""

    library: str

    def describe(self) -> str:
        raise NotImplementedError

    def list(self, prefix: str = "") -> Iterator[AreaObject]:
        raise NotImplementedError

    def shallow(self, prefix: str = "") -> Tuple[List[AreaObject], List[str]]:
        """(objects directly under `prefix`, sub-folder prefixes ending in '/'): one level, so
        finding markers costs the number of markers and batches, not of uploaded files."""
        raise NotImplementedError

    def open_read(self, key: str) -> BinaryIO:
        raise NotImplementedError

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def delete_many(self, keys: List[str]) -> None:
        """Remove these objects (absent ones are no error); S3 sends them 1,000 to a request."""
        for key in keys:
            self.delete(key)

    def read_small(self, key: str, limit: int) -> Optional[bytes]:
        """The whole object if it is at most `limit` bytes; None if absent; StorageError if larger
        (a marker is a few lines: a huge one is refused, not read into memory)."""
        try:
            with self.open_read(key) as fh:
                data = fh.read(limit + 1)
        except NotFound:
            return None
        if len(data) > limit:
            raise StorageError(f"{key} is larger than {limit} bytes; a marker file must be small",
                               target=f"receiving-{self.library}", location=self.location(key))
        return data

    def location(self, key: str) -> str:
        return f"{self.describe().rstrip('/')}/{key}"


class S3Area(ReceivingArea):
    """A receiving bucket (and optional prefix) reached with the library's own credentials."""

    def __init__(self, library: str, adapter, prefix: str = ""):
        self.library = library
        self.adapter = adapter
        self.prefix = prefix.strip("/")

    def _full(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def describe(self) -> str:
        return f"s3://{self.adapter.bucket}/{self.prefix}".rstrip("/")

    def _listing(self, prefix: str, delimiter: Optional[str]) -> Tuple[List[AreaObject], List[str]]:
        ad = self.adapter
        ad.ensure_bucket()
        base = f"{self.prefix}/" if self.prefix else ""
        args = {"Bucket": ad.bucket, "Prefix": base + prefix}
        if delimiter:
            args["Delimiter"] = delimiter
        loc = f"s3://{ad.bucket}/{base}{prefix}"

        def run(attempt: int, last: bool):
            found, folders = [], []
            try:
                for page in ad.client.get_paginator("list_objects_v2").paginate(**args):
                    for item in page.get("Contents") or ():
                        etag = str(item.get("ETag") or "").strip('"') or None
                        found.append(AreaObject(item["Key"][len(base):], int(item.get("Size") or 0), etag))
                    folders.extend(p["Prefix"][len(base):] for p in page.get("CommonPrefixes") or ())
            except Exception as exc:  # noqa: BLE001 - boto3 raises many kinds; _error words them
                raise ad._error(exc, "list the receiving area", loc) from None
            return found, folders

        return ad._retrying(loc, run)

    def list(self, prefix: str = "") -> Iterator[AreaObject]:
        yield from self._listing(prefix, None)[0]

    def shallow(self, prefix: str = "") -> Tuple[List[AreaObject], List[str]]:
        return self._listing(prefix, "/")

    def open_read(self, key: str) -> BinaryIO:
        self.adapter.ensure_bucket()
        full = self._full(key)
        return self.adapter._get(full, self.location(key))

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        full = self._full(key)
        if not overwrite:
            return self.adapter.put_new_object(full, data)
        ad = self.adapter
        ad.ensure_bucket()
        loc = self.location(key)

        def put(attempt: int, last: bool) -> bool:
            try:
                ad.client.put_object(Bucket=ad.bucket, Key=full, Body=data)
            except Exception as exc:  # noqa: BLE001
                raise ad._error(exc, "write", loc) from None
            return True

        return ad._retrying(loc, put)

    def delete(self, key: str) -> None:
        ad = self.adapter
        ad.ensure_bucket()
        full, loc = self._full(key), self.location(key)

        def run(attempt: int, last: bool) -> None:
            try:
                ad.client.delete_object(Bucket=ad.bucket, Key=full)
            except Exception as exc:  # noqa: BLE001
                if ad._code(exc) in ("404", "NoSuchKey", "NotFound"):
                    return
                raise ad._error(exc, "delete", loc) from None

        ad._retrying(loc, run)

    def delete_many(self, keys: List[str]) -> None:
        ad = self.adapter
        ad.ensure_bucket()
        for start in range(0, len(keys), 1000):
            chunk = [self._full(k) for k in keys[start:start + 1000]]
            loc = self.location(keys[start])

            def run(attempt: int, last: bool) -> None:
                try:
                    answer = ad.client.delete_objects(Bucket=ad.bucket, Delete={
                        "Objects": [{"Key": k} for k in chunk], "Quiet": True})
                except Exception as exc:  # noqa: BLE001
                    raise ad._error(exc, "delete", loc) from None
                errors = [e for e in answer.get("Errors") or () if e.get("Code") not in ("NoSuchKey", "404")]
                if errors:
                    first = errors[0]
                    raise StorageError(f"cannot delete {len(errors)} object(s), e.g. {first.get('Key')}: "
                                       f"{first.get('Code')} {first.get('Message') or ''}".strip(),
                                       target=ad.name, location=loc)

            ad._retrying(loc, run)

    def exists(self, key: str) -> bool:
        self.adapter.ensure_bucket()
        full = self._full(key)
        loc = self.location(key)
        return self.adapter._retrying(loc, lambda attempt, last: self.adapter._head(full, loc)) is not None


class FolderArea(ReceivingArea):
    """A receiving folder (an on-site library): no link is followed, only regular files count."""

    def __init__(self, library: str, root: Path):
        self.library = library
        self.root = Path(root)

    def describe(self) -> str:
        return str(self.root)

    def location(self, key: str) -> str:
        return str(self.root / key)

    def _error(self, exc: OSError, action: str, key: str) -> StorageError:
        return StorageError(f"cannot {action} ({exc.strerror or exc})", target=f"receiving-{self.library}",
                            location=self.location(key))

    def _dir(self, segments, *, create: bool = False) -> int:
        """A descriptor of root/segments..., each component opened without following links."""
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW)
        except OSError as exc:
            raise self._error(exc, "open the receiving folder", "") from None
        try:
            for seg in segments:
                if create:
                    try:
                        os.mkdir(seg, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass
                nxt = os.open(seg, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = nxt
        except OSError:
            os.close(fd)
            raise
        return fd

    def list(self, prefix: str = "") -> Iterator[AreaObject]:
        try:
            fd = self._dir(())
        except StorageError:
            raise
        try:
            yield from self._walk(fd, "", prefix)
        finally:
            os.close(fd)

    def shallow(self, prefix: str = "") -> Tuple[List[AreaObject], List[str]]:
        objects: List[AreaObject] = []
        folders: List[str] = []
        segments = [s for s in prefix.split("/") if s]
        try:
            fd = self._dir(segments)
        except FileNotFoundError:
            return objects, folders
        except OSError as exc:
            raise self._error(exc, "list", prefix) from None
        try:
            with os.scandir(fd) as entries:
                items = sorted((e.name, e.stat(follow_symlinks=False)) for e in entries)
        finally:
            os.close(fd)
        for name, st in items:
            if stat.S_ISDIR(st.st_mode):
                folders.append(f"{prefix}{name}/")
            elif not is_temp_name(name):
                objects.append(AreaObject(f"{prefix}{name}", st.st_size,
                                          odd=None if stat.S_ISREG(st.st_mode) else what_is(st.st_mode)))
        return objects, folders

    def _walk(self, fd: int, rel: str, prefix: str) -> Iterator[AreaObject]:
        with os.scandir(fd) as entries:
            items = sorted((e.name, e.stat(follow_symlinks=False)) for e in entries)
        for name, st in items:
            key = f"{rel}{name}"
            if stat.S_ISDIR(st.st_mode):
                if not (key + "/").startswith(prefix) and not prefix.startswith(key + "/"):
                    continue
                try:
                    sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW, dir_fd=fd)
                except OSError:
                    continue  # replaced by a link or removed meanwhile: not an upload we take
                try:
                    yield from self._walk(sub, key + "/", prefix)
                finally:
                    os.close(sub)
            elif key.startswith(prefix) and not is_temp_name(name):
                yield AreaObject(key, st.st_size, odd=None if stat.S_ISREG(st.st_mode) else what_is(st.st_mode))

    def open_read(self, key: str) -> BinaryIO:
        segments = check_key(key).split("/")
        try:
            dfd = self._dir(segments[:-1])
        except FileNotFoundError:
            raise NotFound("not in the receiving area", target=f"receiving-{self.library}",
                           location=self.location(key)) from None
        except OSError as exc:
            raise self._error(exc, "read", key) from None
        try:
            fd = os.open(segments[-1], os.O_RDONLY | _NOFOLLOW, dir_fd=dfd)
        except FileNotFoundError:
            raise NotFound("not in the receiving area", target=f"receiving-{self.library}",
                           location=self.location(key)) from None
        except OSError as exc:
            raise self._error(exc, "read", key) from None
        finally:
            os.close(dfd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise StorageError("not a regular file: refused", target=f"receiving-{self.library}",
                               location=self.location(key))
        return os.fdopen(fd, "rb")

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        segments = check_key(key).split("/")
        try:
            dfd = self._dir(segments[:-1], create=True)
        except OSError as exc:
            raise self._error(exc, "write", key) from None
        tmp = temp_name(segments[-1])
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644, dir_fd=dfd)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            if overwrite:
                os.replace(tmp, segments[-1], src_dir_fd=dfd, dst_dir_fd=dfd)
            else:
                try:
                    rename_noreplace(dfd, tmp, dfd, segments[-1])
                except FileExistsError:
                    os.unlink(tmp, dir_fd=dfd)
                    return False
            os.fsync(dfd)
            return True
        except OSError as exc:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
            raise self._error(exc, "write", key) from None
        finally:
            os.close(dfd)

    def delete(self, key: str) -> None:
        segments = check_key(key).split("/")
        try:
            dfd = self._dir(segments[:-1])
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._error(exc, "delete", key) from None
        try:
            os.unlink(segments[-1], dir_fd=dfd)
            for depth in range(len(segments) - 1, 0, -1):  # empty folders the upload left
                os.close(dfd)
                dfd = self._dir(segments[:depth - 1])
                try:
                    os.rmdir(segments[depth - 1], dir_fd=dfd)
                except OSError:
                    break
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._error(exc, "delete", key) from None
        finally:
            os.close(dfd)

    def exists(self, key: str) -> bool:
        segments = check_key(key).split("/")
        try:
            dfd = self._dir(segments[:-1])
        except OSError:
            return False
        try:
            os.stat(segments[-1], dir_fd=dfd, follow_symlinks=False)
            return True
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return False
            raise self._error(exc, "look at", key) from None
        finally:
            os.close(dfd)


def library_of(config, code: str):
    """The registry entry of `code` (F1's `config.libraries`), UsageError when there is none."""
    libraries = getattr(config, "libraries", None)
    if libraries is None:
        raise UsageError(f"{config.path} has no libraries: section, so there are no receiving areas",
                         path=str(config.path), key="libraries")
    if code not in libraries:
        raise UsageError(f"library {code!r} is not listed under libraries: in {config.path}",
                         path=str(config.path), key="libraries")
    return libraries[code]


def open_area(config, library_code: str, *, environ: Optional[Mapping[str, str]] = None) -> ReceivingArea:
    """The receiving area of `library_code`, reached with that library's credentials only."""
    library = library_of(config, library_code)
    spec = library.receiving
    key = f"libraries.{library_code}.receiving"
    if spec is None:
        raise UsageError(f"library {library_code} has no receiving area in {config.path}",
                         path=str(config.path), key=key)
    if spec.type == "filesystem":
        return FolderArea(library_code, Path(spec.root))
    return S3Area(library_code, _s3_adapter(config, library_code, spec, environ), getattr(spec, "prefix", "") or "")


def _s3_adapter(config, code: str, spec, environ: Optional[Mapping[str, str]]):
    from policies.targets import StorageTarget, resolve_credentials

    from .s3 import S3Adapter

    key = f"libraries.{code}.receiving.credentials"
    creds_spec: Any = getattr(spec, "credentials", None)
    if not creds_spec:
        raise ConfigError(f"the receiving area of library {code} names no credentials; give "
                          f"credentials: {{access_key_env, secret_key_env}} (the library's own keys: the "
                          f"service's keys are never used for a receiving area)", path=str(config.path), key=key)
    options = {"bucket": spec.bucket, "endpoint": getattr(spec, "endpoint", None),
               "region": getattr(spec, "region", None), "addressing_style": getattr(spec, "addressing_style", None)
               or "path", "credentials": dict(creds_spec)}
    target = StorageTarget(name=f"receiving-{code}", type="s3", site="", root=None, options=options,
                           source=Path(config.path))
    try:
        credentials = resolve_credentials(target, environ)
    except ConfigError as exc:
        # the same check, named for where the variable is referenced (not a storage: entry)
        raise ConfigError(exc.message.replace("this storage target", f"library {code}'s receiving area"),
                          path=str(config.path), key=f"{key}.{exc.key.rsplit('.', 1)[-1]}") from None
    return S3Adapter(f"receiving-{code}", "", bucket=spec.bucket, endpoint=options["endpoint"],
                     region=options["region"], addressing_style=options["addressing_style"],
                     credentials=credentials, direct_put=False, source=str(config.path))
