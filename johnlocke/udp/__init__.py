"""The UDP frontend (BEP 15, BEP 41): ``codec`` (datagram bytes in and out, no I/O) and
``server`` (the sockets around it)."""
