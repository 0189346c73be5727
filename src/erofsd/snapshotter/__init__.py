"""erofsd as a containerd snapshotter (the snapshots.v1 gRPC service on a Unix socket).

A client of the erofsd daemon, never of the cache: the layers of an erofsd
image are mounted through the daemon (in the configured domain) and
answered ALREADY_EXISTS, so containerd fetches none of them; every other
layer is kept like containerd's overlayfs snapshotter keeps it.

    store.py     the durable snapshot tree (SQLite)
    filters.py   containerd's filter syntax, for List
    layers.py    which Prepare is an erofsd layer, and which image it mounts
    mounts.py    the mounts a snapshot is used through (overlay, bind)
    service.py   the gRPC servicer
    main.py      the server
"""
