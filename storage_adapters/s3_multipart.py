"""Multipart uploads: parts in parallel (bounded memory), each with its own sha256, the whole
file hashed on the way and the upload completed only when it matches the manifest; resuming an
unfinished upload (parts reused where they match the source); aborting what a failed or killed
upload left (`cleanup_temp`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import (
    Any,
    BinaryIO,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
)

from strongroom.bag_id import BagId

from .base import SourceMismatch, StorageError
from .s3_errors import _BadDigest, _UseClient
from .s3_records import _b64, _Part, _read_exactly

log = logging.getLogger("storage_adapters.s3")

#: the whole-file check of a multipart upload uses one digest, the first of these the manifest has
_WHOLE_FILE_ORDER = ("sha256", "sha512", "sha1", "md5")



class S3Multipart:
    """Mixin of S3Adapter: large files in parts."""

    def _put_multipart(self, key: str, loc: str, stream: BinaryIO, size: int, digests: Dict[str, str],
                       mtime: Optional[float], lock_args: Mapping[str, Any], exclusive: bool,
                       exists: Callable[[], bool], *, keep_on_transient: bool) -> str:
        """Upload in parts, up to `concurrency` at once, each with its sha256 (and MD5 until the
        server proved it checks sha256); the whole file is hashed on the way and the upload is
        completed only if it matches the manifest. An unfinished upload of this key (a previous
        attempt, a killed run) is resumed: its parts are reused where they match the source.
        Returns the composite checksum the stored object must show."""
        algorithm = next(a for a in _WHOLE_FILE_ORDER if a in digests)
        upload_id, uploaded = self._find_upload(key, loc)
        if upload_id is None:
            args = self._common_args(key, digests, mtime, lock_args)
            try:
                upload_id = self.client.create_multipart_upload(ChecksumAlgorithm="SHA256", **args)["UploadId"]
            except Exception as exc:  # noqa: BLE001
                raise self._error(exc, "start a multipart upload", loc) from None
        completed = keep = False
        try:
            whole = hashlib.new(algorithm)
            total = 0
            chunk = self.multipart_chunksize
            futures: List[Future] = []
            failed: List[Future] = []
            with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=f"s3-part-{self.name}") as pool:
                try:
                    number = 0
                    while not failed:
                        self._part_slots.acquire()  # released by _send_part (or here if no part is sent)
                        handed = False
                        try:
                            data = self._read_part(stream, chunk, loc)
                            if not data and number > 0:
                                break
                            number += 1
                            whole.update(data)
                            total += len(data)
                            if total > size:
                                raise SourceMismatch(f"the source gives more than the expected {size} bytes; "
                                                     f"nothing was stored", target=self.name, location=loc)
                            fut = pool.submit(self._send_part, key, loc, upload_id, number, data, uploaded.get(number))
                            handed = True
                        finally:
                            if not handed:
                                self._part_slots.release()
                        fut.add_done_callback(lambda f: failed.append(f) if not f.cancelled() and f.exception() is not None
                                               else None)
                        futures.append(fut)
                        if len(data) < chunk:
                            break
                    wait(futures, return_when=FIRST_EXCEPTION)
                except BaseException:
                    self._cancel_parts(futures)
                    raise
                if failed:
                    self._cancel_parts(futures)
            if failed:
                failed[0].result()  # raises the first failure
            results = [f.result() for f in futures]
            if total != size:
                raise SourceMismatch(f"the source gave {total} bytes, not the expected {size}; nothing was "
                                     f"stored", target=self.name, location=loc)
            found = whole.hexdigest()
            if found != digests[algorithm]:
                raise SourceMismatch(f"the source does not match its checksums ({algorithm} expected "
                                     f"{digests[algorithm]}, read {found}); nothing was stored",
                                     target=self.name, location=loc)
            complete = {"Bucket": self.bucket, "Key": key, "UploadId": upload_id,
                        "MultipartUpload": {"Parts": [part for part, _ in results]}}
            try:
                self._call_put(self.client.complete_multipart_upload, complete, loc, exclusive, exists=exists)
            except _BadDigest:
                raise StorageError("the server refused to complete the upload: the parts do not match their "
                                   "checksums (BadDigest); the upload was aborted, try again",
                                   target=self.name, location=loc) from None
            completed = True
            return _b64(hashlib.sha256(b"".join(sha for _, sha in results)).digest()) + f"-{len(results)}"
        except StorageError as exc:
            if getattr(exc, "s3_code", None) in ("NoSuchUpload",):
                exc.transient = True  # type: ignore[attr-defined]  # aborted under us: start a new one
            keep = keep_on_transient and bool(getattr(exc, "transient", False)) \
                and getattr(exc, "s3_code", None) != "NoSuchUpload"
            raise
        finally:
            if not completed:
                if keep:
                    log.info("%s: %s: keeping the unfinished upload to resume it", self.name, loc)
                else:
                    self._abort(key, upload_id, loc)

    def _cancel_parts(self, futures: Sequence[Future]) -> None:
        for fut in futures:
            if fut.cancel():
                self._part_slots.release()  # a part that never ran never releases its slot

    def _read_part(self, stream: BinaryIO, size: int, loc: str) -> bytes:
        try:
            return _read_exactly(stream, size)
        except OSError as exc:
            raise StorageError(f"cannot read the source ({exc.strerror or exc}); the upload was aborted",
                               target=self.name, location=loc) from None

    def _send_part(self, key: str, loc: str, upload_id: str, number: int, data: bytes,
                   prior: Optional[_Part]) -> Tuple[Dict[str, Any], bytes]:
        """Upload one part (retried on its own), or reuse the part already uploaded under this
        number when its size and checksum match these bytes. Returns (part entry, sha256)."""
        try:
            sha = hashlib.sha256(data).digest()
            b64 = _b64(sha)
            if prior is not None and prior.size == len(data):
                same = (prior.checksum_sha256 == b64 if prior.checksum_sha256
                        else prior.etag.strip('"').lower() == hashlib.md5(data).hexdigest())
                if same:
                    return {"PartNumber": number, "ETag": prior.etag, "ChecksumSHA256": b64}, sha
            args: Dict[str, Any] = {"Bucket": self.bucket, "Key": key, "UploadId": upload_id, "PartNumber": number,
                                    "Body": data, "ChecksumSHA256": b64}
            if self._sha256_verified is not True:
                args["ContentMD5"] = _b64(hashlib.md5(data).digest())

            def send(attempt: int, last: bool) -> Dict[str, Any]:
                direct = self._direct
                try:
                    if direct is not None:
                        try:
                            return direct.upload_part(**args)
                        except _UseClient:
                            self._direct = None
                    return self.client.upload_part(**args)
                except Exception as exc:  # noqa: BLE001
                    if self._code(exc) in ("BadDigest", "InvalidDigest"):
                        err = StorageError(f"the server refused part {number}: the bytes it received do not "
                                           f"match their checksums (BadDigest; damaged in transit?)",
                                           target=self.name, location=loc)
                        err.transient = True  # type: ignore[attr-defined]
                        raise err from None
                    raise self._error(exc, f"upload part {number}", loc) from None

            r = self._retrying(loc, send)
            echoed = r.get("ChecksumSHA256")
            if echoed not in (None, b64):
                raise StorageError(f"the server stored part {number} with checksum {echoed}, not the {b64} sent",
                                   target=self.name, location=loc)
            if self._sha256_verified is None and echoed:
                self._sha256_verified = True
            return {"PartNumber": number, "ETag": r["ETag"], "ChecksumSHA256": b64}, sha
        finally:
            self._part_slots.release()

    def _find_upload(self, key: str, loc: str) -> Tuple[Optional[str], Dict[int, _Part]]:
        """The newest unfinished multipart upload of exactly this key and its parts, or (None, {})."""
        try:
            r = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "look for an unfinished upload", loc) from None
        mine = [u for u in r.get("Uploads") or () if u.get("Key") == key]
        if not mine:
            return None, {}
        epoch = _dt.datetime.min.replace(tzinfo=_dt.timezone.utc)
        newest = max(mine, key=lambda u: u.get("Initiated") or epoch)
        parts: Dict[int, _Part] = {}
        try:
            for page in self.client.get_paginator("list_parts").paginate(Bucket=self.bucket, Key=key,
                                                                          UploadId=newest["UploadId"]):
                for p in page.get("Parts") or ():
                    parts[int(p["PartNumber"])] = _Part(int(p.get("Size", -1)), str(p.get("ETag") or ""),
                                                        p.get("ChecksumSHA256"))
        except Exception as exc:  # noqa: BLE001
            if self._code(exc) in ("NoSuchUpload", "404"):
                return None, {}
            raise self._error(exc, "list the parts of an unfinished upload", loc) from None
        log.info("%s: %s: resuming an unfinished multipart upload (%d part(s) on the server, reused where "
                 "they match the source)", self.name, loc, len(parts))
        return newest["UploadId"], parts

    def _abort(self, key: str, upload_id: str, loc: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception as exc:  # noqa: BLE001 - the original failure is the one to raise
            if self._code(exc) not in ("NoSuchUpload", "404"):
                log.warning("%s: could not abort the unfinished multipart upload of %s (%s); "
                            "cleanup_temp() of the bag removes it", self.name, loc, self._error(exc, "abort", loc))

    def _abort_all(self, key: str, loc: str) -> None:
        """Abort every unfinished upload of exactly this key (best effort: logged, not raised)."""
        try:
            r = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
        except Exception as exc:  # noqa: BLE001
            log.warning("%s: could not look for unfinished uploads of %s (%s); cleanup_temp() of the bag "
                        "removes them", self.name, loc, self._error(exc, "list unfinished uploads", loc))
            return
        for upload in r.get("Uploads") or ():
            if upload.get("Key") == key:
                self._abort(key, upload["UploadId"], loc)

    def cleanup_temp(self, bag_id: BagId) -> int:
        """Abort unfinished multipart uploads under this bag's prefix (left by a killed writer).

        Call it when no other writer is storing this bag on this target (Luigi runs one
        replication task per bag and target): a live upload it aborts fails and is retried.
        """
        self.ensure_bucket()
        prefix = self._bag_prefix(bag_id)
        loc = f"s3://{self.bucket}/{prefix}"

        def run(attempt: int, last: bool) -> int:
            aborted = 0
            try:
                for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                                        Prefix=prefix):
                    for upload in page.get("Uploads") or ():
                        try:
                            self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                               UploadId=upload["UploadId"])
                        except Exception as exc:  # noqa: BLE001
                            if self._code(exc) not in ("NoSuchUpload", "404"):
                                raise
                        aborted += 1
            except Exception as exc:  # noqa: BLE001
                raise self._error(exc, "clear unfinished multipart uploads", loc) from None
            return aborted

        return self._retrying(loc, run)
