"""The erofsd daemon: mounts images in shared domains and serves their bytes."""
