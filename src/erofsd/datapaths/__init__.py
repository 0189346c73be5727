"""How bytes reach readers: one interface (``base.DataPath``), three implementations.

    fanotify.py   kernel EROFS on the cache files, filled on pre-content events
    fscache.py    the kernel's fscache on-demand mode: erofsd as the cachefiles daemon
    fuse.py       a FUSE worker per mount (fuse_worker.py) over the userspace reader
    holder.py     the small process that keeps the kernel's fds across daemon restarts
                  (holderlink.py: the daemon's side of it)

Each path's kernel side, as bytes and ctypes, is the module of the same
name in ``erofsd.kernel``; FUSE's is pyfuse3.
"""
