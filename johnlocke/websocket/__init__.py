"""The WebSocket (WebTorrent) frontend: frames, messages and the hub that relays them."""
