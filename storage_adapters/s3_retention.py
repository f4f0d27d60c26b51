"""Object Lock retention: the policy's retention as a spec, the retain-until date, the check
that the bucket can apply it (Object Lock and versioning enabled, target declared with
`object_lock: true`) before anything is uploaded, and the PutObject arguments that apply it.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any, Dict, Optional

from policies.units import add_years

from .s3_errors import RetentionUnsupported

_LOCK_MODES = {"governance": "GOVERNANCE", "compliance": "COMPLIANCE"}


def retain_until(years: int, now: Optional[_dt.datetime] = None) -> _dt.datetime:
    """`years` calendar years from now (UTC); 29 February becomes 1 March in a common year."""
    return add_years(now or _dt.datetime.now(_dt.timezone.utc), years)


@dataclass(frozen=True)
class RetentionSpec:
    """Object Lock retention applied to every object: mode governance|compliance, years >= 1."""

    mode: str
    years: int

    @classmethod
    def of(cls, value: Any) -> Optional["RetentionSpec"]:
        """From a policies.model.Retention, a (mode, years) pair, or None; None for mode "none"."""
        if value is None:
            return None
        if isinstance(value, RetentionSpec):
            return value
        if isinstance(value, (tuple, list)):
            mode, years = value
        else:
            mode, years = value.mode, value.years
        mode = str(mode).lower()
        if mode == "none":
            return None
        if mode not in _LOCK_MODES:
            raise ValueError(f"retention mode {mode!r} is not one of none, governance, compliance")
        if not isinstance(years, int) or isinstance(years, bool) or years < 1:
            raise ValueError(f"retention years must be a whole number >= 1, not {years!r}")
        return cls(mode, years)

    def describe(self) -> Dict[str, object]:
        return {"mode": self.mode, "years": self.years}



class S3Retention:
    """Mixin of S3Adapter: retention checked once before the first upload, applied to each."""

    def check_retention_supported(self) -> None:
        """Before any upload: StorageError if the policy's retention cannot be applied here.

        Needs `object_lock: true` on the target and a bucket with Object Lock enabled (which
        implies versioning). Without a retention to apply, nothing is checked.
        """
        if self.retention is None or self._retention_checked:
            return
        loc = f"s3://{self.bucket}"
        want = f"{self.retention.mode}, {self.retention.years} years"
        if not self.object_lock:
            raise RetentionUnsupported(f"the policy asks for retention ({want}) but this S3 target is not declared "
                               f"with object_lock: true; use a bucket created with Object Lock and set "
                               f"object_lock: true, or a policy without retention for it",
                               target=self.name, location=loc)
        self.ensure_bucket()

        def lock_configuration(attempt: int, last: bool) -> Dict[str, Any]:
            try:
                return self.client.get_object_lock_configuration(Bucket=self.bucket).get("ObjectLockConfiguration", {})
            except Exception as exc:  # noqa: BLE001
                code = self._code(exc)
                if code in ("ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound", "404",
                            "NotImplemented", "InvalidRequest"):
                    return {}
                raise self._error(exc, "read the bucket's Object Lock configuration", loc) from None

        def versioning(attempt: int, last: bool) -> Optional[str]:
            try:
                return self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
            except Exception as exc:  # noqa: BLE001
                raise self._error(exc, "read the bucket's versioning state", loc) from None

        lock = self._retrying(loc, lock_configuration)
        if lock.get("ObjectLockEnabled") != "Enabled":
            raise RetentionUnsupported(f"the policy asks for retention ({want}) but bucket {self.bucket!r} has no "
                               f"Object Lock (a bucket gets it only when created with Object Lock enabled); "
                               f"nothing was uploaded", target=self.name, location=loc)
        status = self._retrying(loc, versioning)
        if status != "Enabled":
            raise RetentionUnsupported(f"the policy asks for retention ({want}) but bucket {self.bucket!r} does not "
                               f"have versioning enabled (Object Lock needs it); nothing was uploaded",
                               target=self.name, location=loc)
        self._retention_checked = True

    def _lock_args(self) -> Dict[str, Any]:
        if self.retention is None:
            return {}
        self.check_retention_supported()
        return {"ObjectLockMode": _LOCK_MODES[self.retention.mode],
                "ObjectLockRetainUntilDate": retain_until(self.retention.years)}
