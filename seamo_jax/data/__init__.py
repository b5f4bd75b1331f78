"""Input pipeline: records -> non-aligned crops -> normalise -> mask -> batch.

Modules (import them directly; this package stays free of jax so Grain
worker processes start fast):
  crops        season windows (region selection same / partial / disjoint), bilinear resize
  augment      flips/rot90, normalisation, season subsampling, modality dropout
  masking      per-view random token masks
  records      record validation, bad-record skipping, shard error naming
  sample       one record -> one training / evaluation sample
  pipeline     make_train_dataset / make_train_iterator / make_eval_arrays
  global_batch batch_sharding / to_global_batch
  testing      synthetic records and ArrayRecord helpers for tests/benchmarks
"""
