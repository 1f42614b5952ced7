"""Training, in reading order: one run start to finish (`train.train_and_evaluate`), its epoch loop
over the members on data in memory (`loop`), the compiled programs and run state (`programs`),
the member axis (`members`), one member's pure train step (`step`); optimizer pieces (`optim`),
device placement (`sharding`) and hyper-parameter sweeps (`sweep`)."""
