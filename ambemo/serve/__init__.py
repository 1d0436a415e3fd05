"""Serving a trained model to applications and people.

- ``app``: the HTTP service (``POST /v1/predict``, ``/healthz``, ``/readyz``, ``/metrics``, the demo page);
- ``batcher``: dynamic batching over a bounded queue;
- ``inputs``: a request's audio checked and decoded (or a 4xx saying what is wrong);
- ``cli``: ``ambemo serve`` and ``ambemo demo``;
- ``loadtest``: concurrent clients against a running server (throughput, latency, batch sizes).
"""
