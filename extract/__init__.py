"""Stage 1: images -> frozen ImageNet CNN embeddings -> HDF5 feature store.

The only package that imports TensorFlow, and only in `cxr.extract.model` (loaded when a run
starts). The run is split by job: `dataset` (what to embed), `reader` (the decoding stream),
`model` (the embedder), `writer` (the store writer), `runner` (the loop), `progress` (reporting).
"""
