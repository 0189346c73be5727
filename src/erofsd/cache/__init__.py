"""The blob cache: sparse files per (volume, blob), a durable present-map, verified fetches."""
