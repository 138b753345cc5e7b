"""What a stored study shows: budgets, Pareto fronts, tables, plots, and picking a candidate to export."""
