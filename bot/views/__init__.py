"""Views: everything a person reads in Telegram, and the buttons they press.

Pure functions of rows and config: Telegram HTML, inline keyboards, callback data factories
and the formatters of names, times and money. Views import rows (storage.models), statuses
and config, never storage queries or services; docs/architecture.md shows where they sit.
"""
