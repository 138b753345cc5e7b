"""Space files: the document schema, the :class:`~sdsearch.space.space.Space` (sample, hash, rules),
reading YAML and writing trainer-config documents. Imports no torch, Ray or Optuna."""
