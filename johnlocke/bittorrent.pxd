# C declarations for bittorrent.py in the compiled build (see setup.py). Both classes become
# extension types, so the hot path reads their fields as struct members; every field stays a
# Python object, so both builds accept exactly the same values.

cdef class AnnounceRequest:
    cdef public object info_hash, peer_id, port, uploaded, downloaded, left, event, compact
    cdef public object no_peer_id, numwant, key, trackerid, ip, passkey


cdef class Answer:
    cdef public object interval, min_interval, complete, incomplete, downloaded, peers
    cdef public object peer_list, v6, ip, warning
