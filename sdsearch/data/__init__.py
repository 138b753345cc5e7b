"""Datasets as numpy arrays (every source, seeded stratified splits, learnability checks) and the
device-resident batches training reads them in."""
