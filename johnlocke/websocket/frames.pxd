# C declarations for websocket/frames.py in the compiled build (see setup.py): the frame reader
# is an extension type whose loop indexes its buffer in C, and the encoder every outgoing
# message goes through is a C function. A frame's length stays a Python int (a 64-bit length
# field may not fit a C integer; it is refused with a close code, not an overflow).

import cython


cdef class FrameReader:
    cdef public object max_size, part_op, part_len
    cdef public bytes buf
    cdef public list parts

    @cython.locals(buf=bytes, pos=Py_ssize_t, end=Py_ssize_t, head=Py_ssize_t,
                   start=Py_ssize_t, b0=int, b1=int, opcode=int, fin=int, out=list)
    cpdef list feed(self, data)


cpdef bytes encode_text(bytes text)
