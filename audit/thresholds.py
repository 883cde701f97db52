"""The audit's default near-duplicate thresholds: plain data, so `cxr --help` can show them."""

# Defaults, measured on ../shared/data/cxr (2,109 images; docs/audit.md):
# pHash (min over crop levels): planted re-encoded/resized/contrast copies, crops up to 10 % per
# side or up to 10 % off one side <= 20 bits; two films of one patient 28; the same patient under
# two ids 32; films of different patients >= 40 bits.
HASH_THRESHOLD = 26
# MobileNetV2 raw cosine: distinct patients <= 0.936; the closest same-patient pair 0.983.
COSINE_THRESHOLD = 0.96
