"""What the kernel offers erofsd, as bytes and ctypes and nothing more.

``mount`` (mount(2), umount2(2), /proc/self/mountinfo, a bdi's readahead),
``fanotify`` (pre-content events) and ``fscache`` (the cachefiles on-demand
protocol). No policy lives here and nothing of erofsd is imported but the
bottom helpers (``posixio``): the data paths (``erofsd.datapaths``) decide
what to do with these calls.
"""
