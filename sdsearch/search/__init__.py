"""`sdsearch run`: the Ray Tune run over a stored Optuna study (runner, study lifecycle, searcher,
schedulers, the trainable, the live view)."""
