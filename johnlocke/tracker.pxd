# C declarations for tracker.py in the compiled build (see setup.py): the tracker is an
# extension type, so the hot path reads its settings as struct members.

cdef class Tracker:
    cdef public object store, strategies, access, budgets, rng, tracker_id, config, _sweeper
    cdef public object _interval, _min_interval, _numwant_default, _numwant_max
    cdef public object _allow_ip_param, _full_scrape, _full_scrape_interval, _max_scrape
    cdef public object _hold, _max_per_ip, _max_new_swarms, _limited
