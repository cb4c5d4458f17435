"""NumPy reference quantizers: the oracle for every turbo kernel, and where codebooks are made.

Modules: `signs` and `hadamard` (the rotation), `tables` (the committed constants the C
header is generated from), `turbo` (the bit-exact turbo2/3/4 blocks), `qjl` (two-stage
types), `trellis` (turbo2t, turbo3t), `polar` (the paper's norm + Lloyd-Max scheme),
`baselines` (llama.cpp's q8_0, q5_1, q5_0, q4_0, iq4_nl), `reference` (each cache type's
round trip by name), `codebook` (Lloyd-Max design), `verify` (the measurements).
"""
