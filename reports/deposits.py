"""Moved to `ingest.deposit_states` (the deposit workflow's state files are read below the
reports, which may not import pipelines). This name stays for the modules that still import it."""

from ingest.deposit_states import DepositStatus, unfinished_deposits  # noqa: F401
