"""Stage 1: images -> frozen ImageNet CNN embeddings -> HDF5 feature store.

The only package that imports TensorFlow, and only in `extract.model` (loaded when a run starts).
"""
