# C declarations for websocket/server.py in the compiled build (see setup.py). A connection and
# the hub are extension types: the per-message and per-offer path reads their fields as struct
# members and calls their cpdef methods without a Python call. Fields stay Python objects where
# tests and the HTTP server read or set them.

import cython

from johnlocke.bittorrent cimport AnnounceRequest, Answer
from johnlocke.websocket.codec cimport Announce
from johnlocke.websocket.frames cimport FrameReader


cdef class Hub


cdef class Connection:
    cdef public Hub hub
    cdef public object transport
    cdef public FrameReader reader
    cdef public bytes endpoint
    cdef public object ip, passkey, refused
    cdef public list joined
    cdef public dict pending
    cdef public double opened, heard, spoke, pinged, tokens, filled
    cdef public bint busy, closing
    cdef public list backlog, out

    cpdef _message(self, bytes payload, double now)
    cpdef bint send(self, bytes text)
    cpdef bint _write(self, bytes frame)
    cpdef close(self, int code, str reason, str why)


cdef class Hub:
    cdef public object tracker, stats, relay, config, _task, _tasks, _loop
    cdef public dict conns
    cdef public object _serial
    cdef public list _dirty
    cdef public double _now
    cdef public object enabled, max_message_size, max_offers, max_connections, max_swarms
    cdef public object ping_interval, ping_timeout, idle_timeout, first_message_timeout
    cdef public double message_rate
    cdef public object message_burst
    cdef public Py_ssize_t send_buffer_limit

    cpdef dirty(self, Connection conn)
    @cython.locals(conn=Connection, dirty=list, out=list)
    cpdef flush(self)
    @cython.locals(conn=Connection)
    cpdef bint deliver(self, bytes target, bytes text)
    cpdef bint deliver_offer(self, bytes target, bytes offerer, str offer_id, bytes peer_id,
                             bytes info_hash, bytes text)
    @cython.locals(joined=list)
    cpdef bytes _may_join(self, Connection conn, AnnounceRequest req)
    @cython.locals(joined=list)
    cpdef list _announced(self, Connection conn, Announce msg, Answer answer, bytes key)
    @cython.locals(sent=Py_ssize_t, target=bytes, text=bytes, head=bytes, made=tuple,
                   delivered=bint, stale=list)
    cpdef list _relay_offers(self, Connection conn, Announce msg, list peers)
    @cython.locals(conn=Connection, out=list, pending=dict)
    cpdef bint _offer_here(self, bytes target, str offer_id, tuple made, bytes text)
    cpdef run(self, Connection conn, bytes text)
    cpdef forget(self, Connection conn)
