"""OCI images: references, layouts, manifests, registries."""
