"""Diagnostic codes of conversations: `messages` columns, chat templates, conversation teachers and assistant-only training."""

TABLE: list[tuple[str, str, str]] = []
