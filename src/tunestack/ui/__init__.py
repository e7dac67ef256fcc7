"""The web UI (`tunestack ui`): Gradio tabs that run the CLI's own commands as subprocesses and follow them."""
