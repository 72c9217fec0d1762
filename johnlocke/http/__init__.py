"""The HTTP frontend: ``codec`` (query bytes in, bencode out, no I/O) and ``server`` (aiohttp)."""
