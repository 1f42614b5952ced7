"""Datasets on the device: Fashion-MNIST / MNIST loading and seeded splits (`datasets`), and
jittable per-example augmentation keyed by PRNG splits (`augment`)."""
