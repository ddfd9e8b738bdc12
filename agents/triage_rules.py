"""Email triage's rule decisions: a mailbox's rules (VIP senders, ignore lists, urgent domains
and subject keywords, the importance header), compiled once, and the `Verdict` a decision is.

Rules decide what they match with no model call and no I/O; `agents.triage` runs them on each
listed envelope before asking the model (`agents.triage_model`) about the rest.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from bot.config import MailboxConfig
from storage.statuses import TriageVerdict


@dataclass(frozen=True)
class Verdict:
    verdict: str
    reason: str
    by: str  # rule | model | default


class Rules:
    """A mailbox's rules, compiled once. `verdict` is pure and fast (no I/O)."""

    def __init__(self, mailbox: MailboxConfig) -> None:
        self.vip = {a.strip().lower() for a in mailbox.vip}
        self.ignore_senders = {a.strip().lower() for a in mailbox.ignore if "@" in a[1:]}
        self.ignore_domains = {
            a.strip().lower().lstrip("@") for a in mailbox.ignore if "@" not in a[1:]
        }
        self.urgent_domains = {d.strip().lower().lstrip("@") for d in mailbox.urgent_domains}
        self.urgent_words = _words(mailbox.urgent_keywords)
        self.ignore_words = _words(mailbox.ignore_keywords)
        self.high_importance = mailbox.high_importance_urgent

    def verdict(self, sender_addr: str, subject: str, importance: str | None) -> Verdict | None:
        """`sender_addr` is the envelope's address alone: never a "name <addr>" string, whose
        display name the sender chooses (`x <boss@example.com>` would pass as the VIP)."""
        addr = sender_addr.strip().lower()
        domain = addr.rpartition("@")[2]
        if addr in self.vip:
            return Verdict(TriageVerdict.URGENT, f"VIP sender {addr}", "rule")
        if addr in self.ignore_senders or _in_domains(domain, self.ignore_domains):
            return Verdict(TriageVerdict.IGNORE, f"sender {addr} is on the ignore list", "rule")
        if _in_domains(domain, self.urgent_domains):
            return Verdict(TriageVerdict.URGENT, f"sender domain {domain} is urgent", "rule")
        if self.urgent_words is not None and (found := self.urgent_words.search(subject)):
            return Verdict(
                TriageVerdict.URGENT, f'subject mentions "{found.group(0).lower()}"', "rule"
            )
        if self.high_importance and (importance or "").lower() == "high":
            return Verdict(TriageVerdict.URGENT, "marked high importance", "rule")
        if self.ignore_words is not None and (found := self.ignore_words.search(subject)):
            return Verdict(
                TriageVerdict.IGNORE, f'subject mentions "{found.group(0).lower()}"', "rule"
            )
        return None


def _words(words: Sequence[str]) -> re.Pattern[str] | None:
    cleaned = [w.strip() for w in words if w.strip()]
    if not cleaned:
        return None
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in cleaned) + r")\b", re.IGNORECASE)


def _in_domains(domain: str, domains: set[str]) -> bool:
    """`mail.example.com` is in `example.com`."""
    if not domain or not domains:
        return False
    parts = domain.split(".")
    return any(".".join(parts[i:]) in domains for i in range(len(parts)))
