"""Models: the registry of what can be trained (catalogue, embedded model, hub ids, loading,
quantization and LoRA configs), the cache of the one heavy model in memory, hub downloads, chat
families and generation with a chat template. Knows nothing of datasets, runs or reports.
"""
