"""Finetune Studio in the browser: `python app.py [--host 127.0.0.1] [--port 7860] [--home DIR]`.

Everything lives in the studio package; this file only hands the flags to studio.launch.
"""
import sys

from studio.launch import main

if __name__ == "__main__":
    sys.exit(main())
