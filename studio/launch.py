"""Start the browser studio: flags → Studio → studio.ui.build_app → launch on 127.0.0.1.

Owns the launch flags and the friendly failures around launching (port in use, bad home).
Used by app.py and the `finetune-studio` console script.
"""
from __future__ import annotations

import argparse
import socket
import sys


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: TIME_WAIT is fine
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="finetune-studio", description="Launch Finetune Studio in "
                                "your browser.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: "
                   "only this computer; use an SSH tunnel for remote access)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--home", default=None, help="STUDIO_HOME folder")
    p.add_argument("--share", action="store_true", help="also create a public Gradio share link")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    args = p.parse_args(argv)
    from .errors import StudioError

    if not port_free(args.host, args.port):
        print(f"error: port {args.port} on {args.host} is already in use (another studio or "
              f"program?). Stop it, or pick another port: python app.py --port {args.port + 1}",
              file=sys.stderr)
        return 1
    try:
        from .api import Studio

        studio = Studio(args.home)
    except StudioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    from .ui import build_app, launch_kwargs

    app = build_app(studio)
    print(f"Finetune Studio on http://{args.host}:{args.port}  (home: {studio.home.root})",
          flush=True)
    app.launch(server_name=args.host, server_port=args.port, share=args.share,
               inbrowser=not args.no_browser, **launch_kwargs())
    return 0
