"""Pure manifest builders: plain data in, Kubernetes manifests (dicts) out, no I/O."""
