"""Online features: definitions from the config, the Redis and in-memory stores, the loader.

Modules: config (the `features:` section), definitions (entities, row layouts, the one
rows-to-matrix function shared by training and serving), store (the interface),
redis_store (its circuit breaker is switchyard.runtimes.circuit_breaker), memory_store,
cache, factory (create_store), files (CSV/Parquet feature files), loader and cli
(`switchyard features load`).
"""
