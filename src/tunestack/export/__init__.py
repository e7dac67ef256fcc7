"""Turn a model and its adapters into a standalone model folder: `tunestack export`."""
