"""The HTTP edge: routes, request and response models, and RFC 9457 problem responses."""
