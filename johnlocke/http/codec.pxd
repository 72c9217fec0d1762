# C declarations for codec.py in the compiled build (see setup.py).

import cython

from johnlocke.bittorrent cimport AnnounceRequest, Answer

cdef dict _EVENTS
cdef bytes _PERCENT_TO_EQUALS
cdef frozenset _ANNOUNCE_PARAMS
cdef object _BAD_ESCAPE
cdef bytes _ANNOUNCE, _COMPACT_V4, _COMPACT_V6

cdef bytes _unescape(bytes name, bytes value)
cdef object _uint(str name, bytes value)
cdef dict _query_dict(bytes query)
cdef object _count(bytes name, bytes value)
cdef object _text(bytes name, bytes value)
@cython.locals(params=dict, piece=bytes, name=bytes, value=bytes)
cpdef AnnounceRequest parse_announce(bytes query)
cpdef bytes encode_answer(Answer answer, bytes tracker_id, bint no_peer_id=*)
