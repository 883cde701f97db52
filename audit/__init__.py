"""`cxr audit`: duplicates, near-duplicates, conflicts and source confounds of a feature store."""
