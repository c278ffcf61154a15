"""Privacy mechanisms: client-level differential privacy (clipping, server noise, accounting with
dp-accounting) and simulated secure aggregation of integer-quantized updates."""
