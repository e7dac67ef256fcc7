"""Subpackages whose name is also a function of the Python API (`tunestack.export`, `tunestack.serve`).

Importing a subpackage binds its name on `tunestack`, which would hide the API function of the same name; such a
subpackage is made callable instead, calling that function, so `tunestack.export(...)` works either way."""

from __future__ import annotations

import sys
import types


def call_api_function(module_name: str, function: str) -> None:
    """Make the module `module_name` callable as `tunestack.api.<function>`."""

    class CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            from tunestack import api

            return getattr(api, function)(*args, **kwargs)

    sys.modules[module_name].__class__ = CallableModule
