# C declarations for websocket/codec.py in the compiled build (see setup.py): none yet; Cython
# compiles the module as it is, which already takes the interpreter out of its hot loops.
