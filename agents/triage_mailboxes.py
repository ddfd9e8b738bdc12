"""Email triage's mailbox backends: a configured mailbox opened as himalaya (IMAP and others)
or Microsoft Graph, behind the one `Mailbox` interface."""

from __future__ import annotations

from pathlib import Path

from bot.config import Config, MailboxConfig
from integrations.himalaya import Himalaya
from integrations.mailbox import Mailbox
from integrations.msgraph import GraphMailbox


def open_mailbox(config: Config, mailbox: MailboxConfig, index: int) -> Mailbox:
    timeout = mailbox.timeout.total_seconds()
    if mailbox.backend == "himalaya":
        return Himalaya(
            account=mailbox.account,
            folder=mailbox.folder,
            binary=mailbox.himalaya.bin,
            version=mailbox.himalaya.version,
            timeout=timeout,
            page_size=mailbox.page_size,
            where=f"mailboxes[{index}].himalaya.bin",
        )
    graph = mailbox.graph
    base = config.path.parent
    cache = graph.token_cache or Path(f".msal-{mailbox.id}.json")
    return GraphMailbox(
        user=mailbox.user,
        folder=mailbox.folder,
        tenant=graph.tenant,
        client_id=graph.client_id,
        client_secret=graph.client_secret.get_secret_value(),
        authority=graph.authority,
        base_url=graph.base_url,
        token_cache=cache if cache.is_absolute() else base / cache,
        ca_bundle=(
            graph.ca_bundle
            if graph.ca_bundle is None or graph.ca_bundle.is_absolute()
            else base / graph.ca_bundle
        ),
        timeout=timeout,
        page_size=mailbox.page_size,
    )
