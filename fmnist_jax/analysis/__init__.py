"""Looking inside trained models: features, feature maps, t-SNE and calibration
(`introspection`), their plots (`plots`) and the analysis of one run (`run_analysis`)."""
