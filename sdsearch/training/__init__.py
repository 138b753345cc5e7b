"""Training: build a config's network and loss, fit them, evaluate every exit."""
