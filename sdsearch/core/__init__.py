"""The rules every stage shares: leaf declarations, exit names, registries, the metric table, units,
errors, writing files, Pareto maths, the MCU platforms and silencing native output. Imports no torch, Ray or Optuna, and nothing else of sdsearch."""
