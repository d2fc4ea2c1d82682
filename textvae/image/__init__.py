"""The image autoencoder family beside the text core: MNIST and Fashion-MNIST models trained,
evaluated and plotted with the text side's conventions (TOML recipes, honest terms, shared metrics)."""
