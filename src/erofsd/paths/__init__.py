"""Data paths: how bytes reach readers (kernel EROFS mounts, fanotify, fscache, FUSE)."""
