"""The OpenAI-compatible server: protocol models, an engine-agnostic serving layer and a thin HTTP router."""
