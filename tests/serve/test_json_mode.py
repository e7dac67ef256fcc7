"""The JSON-prefix parser behind JSON mode accepts exactly the beginnings of one JSON object."""

from __future__ import annotations

import json

import pytest

from tunestack.inference.json_mode import JsonPrefix

VALID = ['{}', '{"a": 1}', '{"a": [1, -2.5e3, true, null, "x\\"y\\u00e9"], "b": {"c": false}}', ' { "k" : "v" } ',
         '{"n": 0, "m": [], "o": {}}', '{"s": "你好"}']
INVALID = ['[1]', '"x"', '{"a" 1}', '{"a": 01}', '{a: 1}', '{"a": tru}', '{"a": 1,}', '{"a": 1}}', '{"a": "\n"}',
           '{"a": 1} x', '{"a": 1.}', '{"a": "\\q"}', '{"a": [1 2]}']


@pytest.mark.parametrize("text", VALID)
def test_valid_objects_complete(text):
    json.loads(text)
    state = JsonPrefix().feed(text)
    assert state is not None and state.done
    for cut in range(len(text.rstrip())):  # every beginning is a valid prefix, not yet complete
        prefix = JsonPrefix().feed(text[:cut])
        assert prefix is not None and not prefix.done


@pytest.mark.parametrize("text", INVALID)
def test_invalid_texts_are_refused(text):
    state = JsonPrefix().feed(text)
    assert state is None or not state.done
