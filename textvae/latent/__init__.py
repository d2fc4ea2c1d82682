"""The latent space: codes, attribute vectors, transfer, neighbours, their plots and their commands."""
