# C declarations for strategy.py in the compiled build (see setup.py): what the tracker calls on
# every announce. Plugins keep calling all of it as plain Python.

import cython


cdef class Chosen:
    cdef public object name, strategy, interval


cdef class StrategySet:
    cdef public Chosen default
    cdef public list rules

    cpdef Chosen choose(self, object swarm)


@cython.locals(seeders=Py_ssize_t, leechers=Py_ssize_t, total=Py_ssize_t,
               from_seeders=Py_ssize_t, from_leechers=Py_ssize_t)
cpdef list uniform(object swarm, Py_ssize_t numwant, object rng)
