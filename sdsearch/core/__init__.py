"""The rules every stage shares: leaf declarations, exit names, registries, the metric table, units,
errors, writing files and Pareto maths. Imports no torch, Ray or Optuna, and nothing else of sdsearch."""
