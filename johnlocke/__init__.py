"""JohnLocke: a standalone BitTorrent tracker daemon."""

__version__ = "0.1.0"
