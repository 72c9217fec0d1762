# C declarations for websocket/frames.py in the compiled build (see setup.py): the frame reader
# is an extension type, and the encoder every outgoing message goes through a C function.

cdef class FrameReader:
    cdef public object max_size, buf, part_op, part_len
    cdef public list parts


cpdef bytes encode_text(bytes text)
