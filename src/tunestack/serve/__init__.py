"""The OpenAI-compatible server: protocol models, an engine-agnostic serving layer and a thin HTTP router."""

from tunestack.callable_module import call_api_function

call_api_function(__name__, "serve")
