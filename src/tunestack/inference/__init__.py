"""Inference engines on token ids, and the chat front end that turns text into token ids and back."""
