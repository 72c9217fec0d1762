# C declarations for codec.py in the compiled build (see setup.py): the request and answer are
# the extension types of bittorrent.pxd, built and read as structs on every datagram.

import cython

from johnlocke.bittorrent cimport AnnounceRequest, Answer

cdef object _HEADER, _CONNECTED, _ANNOUNCE, _ANSWER, _SCRAPED
cdef bytes _ZERO_IP
cdef dict _KEYED

cpdef bytes connection_id(bytes secret, bytes ip, object window)

@cython.locals(size=Py_ssize_t)
cpdef tuple read_header(bytes data)

cpdef parse_announce(bytes data, bint v6=*)

cpdef bytes encode_announce(object transaction_id, Answer answer)
