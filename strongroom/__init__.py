"""Strongroom: long-term digital preservation archive pipeline.

This tiny package holds what every other package shares (the version recorded in PREMIS
agents, and the error types the CLI turns into exit codes), so that the domain packages
(`ingest`, `fixity`, `storage_adapters`, ...) need not import each other for it.
"""

__version__ = "0.1.0"
NAME = "Strongroom"
