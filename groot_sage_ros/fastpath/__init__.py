"""The fast path, generic over families: fused Linear modules, compiled regions, precision, CUDA graphs,
padding buckets. A family declares its regions (``families.base.FastRegion``); this package runs them."""
