# C declarations for codec.py in the compiled build (see setup.py).

from johnlocke.bittorrent cimport AnnounceRequest, Answer

cdef dict _EVENTS
cdef bytes _PERCENT_TO_EQUALS
cdef object _ANNOUNCE_PARAMS, _BAD_ESCAPE
cdef bytes _ANNOUNCE, _COMPACT_V4, _COMPACT_V6

cdef bytes _unescape(bytes name, bytes value)
cdef object _uint(str name, bytes value)
cdef dict _query_dict(bytes query)
cdef object _count(bytes name, bytes value)
cdef object _text(bytes name, bytes value)
cpdef AnnounceRequest parse_announce(bytes query)
cpdef bytes encode_answer(Answer answer, bytes tracker_id, bint no_peer_id=*)
