"""Broadcast notices the gateway follows (a key revoked, a user changed): parsed as their contract model and
handed over; a malformed one is skipped, since a notice is advisory and the next request asks anyway."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel

log = logging.getLogger(__name__)

_Notice = TypeVar("_Notice", bound=BaseModel)


async def follow(
    nc: NatsClient,
    subject: str,
    model: type[_Notice],
    handle: Callable[[_Notice], None],
    *,
    malformed: str | None = None,
) -> Subscription:
    """Subscribes `handle` to the notices on `subject`; a malformed one is logged as `malformed` when named."""

    async def on_notice(msg: Msg) -> None:
        try:
            notice = model.model_validate_json(msg.data)
        except ValueError:
            if malformed is not None:
                log.warning("ignoring a malformed %s", malformed)
            return
        handle(notice)

    return await nc.subscribe(subject, cb=on_notice)
