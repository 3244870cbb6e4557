"""What users write: the decorators and their registry, ``ctx``, the one JSON encoding of
results, and keyset pagination. Nothing here knows how results travel."""
