# C declarations for websocket/codec.py in the compiled build (see setup.py): the parsed
# messages are extension types, and the encoders called for every relayed offer are C functions.

import cython


cdef class Announce:
    cdef public object request, info_hash_text, peer_id_text, offers, answer, to_peer_id, offer_id


cdef class Scrape:
    cdef public object info_hashes, texts


cpdef bytes offer_head(str info_hash_text, str peer_id_text)
cpdef bytes encode_offer_after(bytes head, str offer_id, object offer)


# The announce parser: its dict reads become C calls on the parsed object.
cpdef bytes binary(object value, str name, str action, object info_hash=*)
cpdef object _count(dict params, str name, str info_hash, object missing=*)
@cython.locals(offers=list, offers_in=object, item=object, offer_id=object, offer=object)
cpdef Announce _announce(dict params, Py_ssize_t max_offers)
