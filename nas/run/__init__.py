"""The run directory and what every command shares: settings (``config``), the opened run (``context``),
tracking backends (``tracking``) and the files themselves (``files``: atomic writes, the lock, the cache
home).

The bottom layer of the engine: of ``nas`` it imports only the data sets (``nas.data``, which a run loads).
"""
