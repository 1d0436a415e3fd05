"""``ambemo serve MODEL`` (the HTTP API) and ``ambemo demo MODEL`` (the same app, for a person at a browser)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from ambemo.serve.app import API_KEY_ENV, ServeSettings, create_app


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the server reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_parser(demo: bool) -> argparse.ArgumentParser:
    defaults = ServeSettings()
    parser = argparse.ArgumentParser(
        prog=f"ambemo {'demo' if demo else 'serve'}",
        description=(
            "A page at http://127.0.0.1:PORT/ to upload or record a clip and see the model's emotion distribution."
            if demo
            else "Serve a trained model over HTTP: POST /v1/predict (OpenAPI schema at /openapi.json)."
        ),
    )
    parser.add_argument("model", help="exported model folder, run folder, or latest:<experiment>")
    if not demo:
        parser.add_argument(
            "--host",
            default="127.0.0.1",
            help=f"address to bind (default 127.0.0.1; any other needs the API key in ${API_KEY_ENV})",
        )
    parser.add_argument("--port", type=int, default=7860 if demo else 8000)
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--threshold", type=float, help="override the stored ambiguity threshold")
    parser.add_argument("--base-model", help="LoRA exports: the base model's folder (default: the one recorded)")
    parser.add_argument("--runs", default="runs", help="where latest:<experiment> looks (default: runs)")
    parser.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size, help="most clips per batch")
    parser.add_argument(
        "--max-wait-ms", type=float, default=defaults.max_wait_ms, help="how long a batch waits for more requests"
    )
    parser.add_argument(
        "--max-queue", type=int, default=defaults.max_queue, help="waiting requests beyond which new ones get 503"
    )
    parser.add_argument("--timeout", type=float, default=defaults.timeout_s, help="per-request timeout in seconds")
    parser.add_argument("--max-upload-mb", type=float, default=defaults.max_upload_mb)
    parser.add_argument("--max-audio-seconds", type=float, default=defaults.max_audio_seconds)
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return parser


def settings_from(args: argparse.Namespace, api_key: str | None) -> ServeSettings:
    return ServeSettings(
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        timeout_s=args.timeout,
        max_upload_mb=args.max_upload_mb,
        max_audio_seconds=args.max_audio_seconds,
        api_key=api_key,
    )


def run(argv: list[str] | None, demo: bool) -> int:
    import uvicorn

    from ambemo.inference.loading import ModelLoadError, load

    name = "demo" if demo else "serve"
    args = build_parser(demo).parse_args(argv)
    host = "127.0.0.1" if demo else args.host
    api_key = os.environ.get(API_KEY_ENV) or None
    if not is_loopback(host) and api_key is None:
        print(
            f"ambemo {name}: binding to {host} makes the model reachable from other machines: set {API_KEY_ENV} "
            "(clients then send 'Authorization: Bearer KEY'), or bind to 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    try:
        settings = settings_from(args, api_key)
        if settings.max_batch_size < 1 or settings.max_queue < 1 or settings.timeout_s <= 0:
            raise ValueError("--max-batch-size and --max-queue must be >= 1 and --timeout > 0")
        predictor = load(args.model, device=args.device, base_model=args.base_model, runs_dir=args.runs)
    except (ModelLoadError, ValueError) as err:
        print(f"ambemo {name}: {err}", file=sys.stderr)
        return 2
    if args.threshold is not None:
        predictor.ambiguity = {**(predictor.ambiguity or {}), "threshold": args.threshold}
    url = f"http://{'[' + host + ']' if ':' in host else host}:{args.port}"
    print(
        f"[ambemo] {predictor.source} on {predictor.device}: "
        + (f"open {url}/ in a browser" if demo else f"POST {url}/v1/predict (schema: {url}/openapi.json, page: {url}/)")
        + ("; API key required" if api_key else ""),
        file=sys.stderr,
    )
    config = uvicorn.Config(
        create_app(predictor, settings),
        host=host,
        port=args.port,
        log_level=args.log_level,
        # On SIGTERM/SIGINT uvicorn stops accepting, lets accepted requests finish (they are bounded by
        # the request timeout), then shuts the batcher down.
        timeout_graceful_shutdown=int(settings.timeout_s) + 5,
    )
    uvicorn.Server(config).run()
    return 0


def serve_main(argv: list[str] | None = None) -> int:
    return run(argv, demo=False)


def demo_main(argv: list[str] | None = None) -> int:
    return run(argv, demo=True)
