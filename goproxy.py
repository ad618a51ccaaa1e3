#!/usr/bin/env python3
"""Run goproxy from a checkout: python3 goproxy.py -port 12345."""

import sys

from goproxy.cli import main

if __name__ == "__main__":
    sys.exit(main())
