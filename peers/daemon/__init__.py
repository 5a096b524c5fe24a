"""The peer daemon: an institution's server next to its data (aiohttp over mutual TLS).

`config` reads peer.toml; `store` and `audit_log` are its SQLite state; `policy` decides
on proposed jobs; `context` holds the one mailbox (`actor`), store, ledger and client that
the classes in `roles/` (hosting, participating, budget, replication, list serving,
reconciliation, views) work over; `service` wires them; `app` serves the HTTP API
(`openapi` describes it); `client` talks to other peers.
"""
