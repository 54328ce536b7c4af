"""Low-bit kernels: KIVI (KV-cache quantization) and T-MAC (table-lookup mixed-precision GEMM)."""
