"""The networks: backbones and their contract, exit branches and CBFE, fusion, the multi-exit network
with its single-exit deploy models, and the self-distillation loss."""
