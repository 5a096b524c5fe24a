"""The peer daemon: an institution's server next to its data (aiohttp over mutual TLS).

`config` reads peer.toml; `store` and `audit_log` are its SQLite state; `policy` decides
on proposed jobs; `actor` owns the state and changes it one message at a time; `app`
serves the HTTP API (`openapi` describes it); `client` talks to other peers.
"""
