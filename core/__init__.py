"""Shared foundation: settings, provider factories, records and SQL stores used by every package."""
