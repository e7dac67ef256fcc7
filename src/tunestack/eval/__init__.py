"""Evaluation: benchmark and custom tasks scored on a local model or an OpenAI-compatible server, with reports."""
