# C declarations for memory.py in the compiled build (see setup.py): the classes of the announce
# path become extension types with C integer fields, and the index probe, the slot choice and
# the answer's peers run on C integers. Constants other modules import stay Python objects.

import cython

cdef Py_ssize_t _SEEN, _KEY, _PROTO_SHIFT, _HDR, _XS, _DL, _EMPTY, _DELETED, _RUN
cdef tuple _W, _IP_LEN


cdef class _Segments:
    cdef public list segs, fill
    cdef public Py_ssize_t lmask, split


cdef class IpCounts(_Segments):
    cdef public Py_ssize_t live


@cython.locals(avail=Py_ssize_t, r=Py_ssize_t, base=Py_ssize_t, extra=Py_ssize_t,
               step=double, rot=Py_ssize_t, j=Py_ssize_t, v=Py_ssize_t, end=Py_ssize_t,
               out=list)
cpdef list runs(Py_ssize_t t, Py_ssize_t n, Py_ssize_t skip, Py_ssize_t k, object rng)

cdef _place(list out, Py_ssize_t t, Py_ssize_t v, Py_ssize_t end, Py_ssize_t skip)

@cython.locals(avail=Py_ssize_t, v=Py_ssize_t, end=Py_ssize_t, out=list)
cpdef list window(Py_ssize_t t, Py_ssize_t n, Py_ssize_t skip, Py_ssize_t start, Py_ssize_t k)


@cython.locals(n0=Py_ssize_t, n1=Py_ssize_t, n2=Py_ssize_t, n3=Py_ssize_t, end=Py_ssize_t,
               ts=Py_ssize_t, r0=Py_ssize_t, a0=Py_ssize_t, ns=Py_ssize_t, nl=Py_ssize_t,
               ms=Py_ssize_t, ml=Py_ssize_t, me=Py_ssize_t, i=Py_ssize_t, w=Py_ssize_t,
               s=Py_ssize_t, al=Py_ssize_t, a=Py_ssize_t, addrs=list, meta=list)
cpdef packed_refresh(bytes p, bytes peer_id, bytes addr, Py_ssize_t t, Py_ssize_t key_hash,
                     Py_ssize_t now, Py_ssize_t hold)


cdef class Swarm(_Segments):
    cdef public list addrs, meta, totals
    cdef public Py_ssize_t used, xs, xl, seeds, leeches
    cdef public object downloaded, ipc

    @cython.locals(h=Py_hash_t, b=Py_ssize_t, mask=Py_ssize_t, i=Py_ssize_t, free=Py_ssize_t,
                   other=Py_ssize_t, e=Py_ssize_t, meta=list)
    cpdef tuple _probe(self, bytes peer_id, Py_ssize_t f)

    @cython.locals(h=Py_hash_t, mask=Py_ssize_t, i=Py_ssize_t, old=Py_ssize_t, new=Py_ssize_t)
    cpdef _reentry(self, bytes peer_id, Py_ssize_t old, Py_ssize_t new)

    @cython.locals(t=Py_ssize_t, col=object)
    cpdef Py_ssize_t _append(self, Py_ssize_t t, object addr, object meta) except -1

    cpdef _index(self, Py_ssize_t b, Py_ssize_t pos, Py_ssize_t e)

    @cython.locals(t=Py_ssize_t, h=Py_hash_t, b=Py_ssize_t, pos=Py_ssize_t, e=Py_ssize_t,
                   other=Py_ssize_t, slot=Py_ssize_t, old_t=Py_ssize_t, old_slot=Py_ssize_t,
                   w=Py_ssize_t, m=Py_ssize_t, moved=bint, counted=bint)
    cpdef tuple upsert(self, bytes peer_id, bytes addr, Py_ssize_t f, bint seeder,
                       Py_ssize_t key_hash, Py_ssize_t now, bint completed, Py_ssize_t hold=*,
                       Py_ssize_t max_per_ip=*, Py_ssize_t proto=*)


cdef class MemoryView:
    cdef public list addrs, meta
    cdef public Py_ssize_t table, slot
    cdef public object info_hash, peer_id, addr, complete, incomplete, downloaded, completed
    cdef public object now

    @cython.locals(t=Py_ssize_t, n=Py_ssize_t)
    cpdef Py_ssize_t count(self, bint seeders) except -1

    @cython.locals(t=Py_ssize_t, n=Py_ssize_t)
    cpdef list sample(self, bint seeders, Py_ssize_t k, object rng)

    @cython.locals(t=Py_ssize_t, n=Py_ssize_t)
    cpdef list window(self, bint seeders, Py_ssize_t start, Py_ssize_t k)

    @cython.locals(addrs=list, w=Py_ssize_t, t=Py_ssize_t, f=Py_ssize_t, c=Py_ssize_t,
                   i=Py_ssize_t, j=Py_ssize_t)
    cpdef bytes compact(self, list picks)


cdef class Buckets(_Segments):
    cdef public Py_ssize_t count


cdef class MemoryStore:
    cdef public dict swarms
    cdef public Buckets tiny
    cdef public list totals
    cdef public bint _dirty
    cdef public object _generation, _frozen, _dict_peak, _freed, _clock, _epoch

    @cython.locals(now=Py_ssize_t, f=Py_ssize_t, big=Swarm, t=Py_ssize_t, slot=Py_ssize_t,
                   counted=bint, updated=bint, b=Py_ssize_t, o=Py_ssize_t, q=Py_ssize_t,
                   created=bint, held=bint)
    cpdef _announce(self, bytes info_hash, bytes peer_id, bytes addr, bint seeder,
                    object key_hash, bint completed_event, Py_ssize_t hold,
                    Py_ssize_t max_per_ip, bint create, Py_ssize_t proto)
