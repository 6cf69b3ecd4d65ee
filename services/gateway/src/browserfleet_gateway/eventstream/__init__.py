"""The organization's event stream over WebSocket (docs/websocket.md).

`hub` reads EVENTS once per gateway process and fans events out by organization; `session` is one socket
(its subscription, resume, bounded queue, limits); `auth` says who is on a socket (header, ticket, or a first
AUTH message) and `tickets` keeps the single-use tickets in NATS KV so any replica redeems them; `replay`
reads one organization's past events for a client resuming with `since`; `messages` turns a domain event
into the message clients receive; `socketbase` is what a session shares with a live-view socket (its end,
expiry, re-AUTH, flood strikes, revocations). `EventStream` (in `service`) holds them for the app.
"""
