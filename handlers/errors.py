"""The one error handler: the person sees a reference id, the log has the traceback."""

from __future__ import annotations

import logging
import secrets

from aiogram.exceptions import TelegramAPIError
from aiogram.types import ErrorEvent

from handlers.registry import Routes

log = logging.getLogger(__name__)
router = Routes(__name__)


@router.errors()
async def on_error(event: ErrorEvent) -> bool:
    ref = secrets.token_hex(4)
    log.error(
        "error ref=%s while handling update %d",
        ref,
        event.update.update_id,
        exc_info=event.exception,
    )
    text = f"Something went wrong on our side (ref {ref}). It is logged; try again shortly."
    try:
        if event.update.callback_query is not None:
            await event.update.callback_query.answer(text, show_alert=True)
        elif event.update.message is not None:
            await event.update.message.answer(text)
    except TelegramAPIError as err:
        log.warning("could not tell the user about error ref=%s: %s", ref, err)
    return True
