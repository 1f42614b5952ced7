"""Exact k-nearest neighbours in JAX (`exact`) and the k-NN experiment (`run`)."""
