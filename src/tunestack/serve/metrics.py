"""Prometheus metrics of one server: requests, tokens, queue depth and latency histograms, in its own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_TOKEN_GAP = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class ServeMetrics:
    """Counters and histograms updated by the serving layer; gauges read the engine when scraped."""

    def __init__(self, engine, admitted):
        self.registry = CollectorRegistry()
        self.requests = Counter("tunestack_requests", "HTTP requests answered, by endpoint and status code",
                                ["endpoint", "status"], registry=self.registry)
        self.prompt_tokens = Counter("tunestack_prompt_tokens", "prompt tokens processed", registry=self.registry)
        self.generation_tokens = Counter("tunestack_generation_tokens", "tokens generated", registry=self.registry)
        self.rejected = Counter("tunestack_rejected_overload", "requests refused with 429 because the queue was full",
                                registry=self.registry)
        self.latency = Histogram("tunestack_request_latency_seconds", "time from request to its last token",
                                 buckets=_LATENCY, registry=self.registry)
        self.first_token = Histogram("tunestack_time_to_first_token_seconds", "time from request to its first token",
                                     buckets=_LATENCY, registry=self.registry)
        self.token_gap = Histogram("tunestack_inter_token_latency_seconds", "time between consecutive tokens",
                                   buckets=_TOKEN_GAP, registry=self.registry)
        Gauge("tunestack_queue_depth", "sequences waiting for a slot in the engine's batch",
              registry=self.registry).set_function(engine.waiting)
        Gauge("tunestack_running_sequences", "sequences in the engine's running batch",
              registry=self.registry).set_function(engine.running)
        Gauge("tunestack_admitted_sequences", "sequences admitted and not finished (running or queued)",
              registry=self.registry).set_function(admitted)
        stats = getattr(engine, "speculation", None)  # the pt engine's speculative decoding counts
        if stats is not None and getattr(engine, "speculator", None) is not None:
            Gauge("tunestack_speculative_draft_tokens", "draft tokens proposed to the model since the server started",
                  registry=self.registry).set_function(lambda: stats.proposed)
            Gauge("tunestack_speculative_accepted_tokens", "draft tokens the model agreed with (emitted without a "
                  "forward pass of their own)", registry=self.registry).set_function(lambda: stats.accepted)
            Gauge("tunestack_speculative_acceptance_rate", "accepted / proposed draft tokens",
                  registry=self.registry).set_function(lambda: stats.acceptance_rate)

    def render(self) -> bytes:
        return generate_latest(self.registry)
