"""Moved to `catalog.replicas` (the current state of each copy is the catalog's, and fixity
reads it as well as reports). This name stays for the reports modules that still import it."""

from catalog.replicas import ABSENT, BAD_STATES, GOOD_STATES, UNVERIFIED_STATES, replica_table  # noqa: F401
