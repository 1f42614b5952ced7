"""Using a trained run: classifying image files (`predict`) and exporting a model that loads with
plain JAX (`export`, `export_loader`)."""
