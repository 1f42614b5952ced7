"""Training: the per-member state and steps (`train`), members and the compiled programs over
them (`trainer`), one run start to finish (`run`), optimizer pieces (`optim`), device placement
(`sharding`) and hyper-parameter sweeps (`sweep`)."""
