"""Turn a model and its adapters into a standalone model folder: `tunestack export`."""

from tunestack.callable_module import call_api_function

call_api_function(__name__, "export")
