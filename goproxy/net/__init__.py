"""Outbound networking: connectors, the HTTP transport, proxies, TLS in TLS and custom DNS."""
