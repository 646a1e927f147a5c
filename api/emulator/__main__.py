"""Run the emulator from a shell: python -m <package>.api.emulator [--port 8765] ..."""
import argparse

from . import serve


def main(argv=None):
    parser = argparse.ArgumentParser(description="Local DashScope Qwen-Image emulator (loopback only).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per generation")
    parser.add_argument("--no-rate-limits", action="store_true", help="never answer 429")
    parser.add_argument("--result-ttl", type=float, default=86400.0, help="seconds result URLs live")
    args = parser.parse_args(argv)
    serve(host=args.host, port=args.port, latency=args.latency, rate_limits=not args.no_rate_limits,
          result_ttl=args.result_ttl)


if __name__ == "__main__":
    main()
