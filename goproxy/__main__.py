"""python -m goproxy runs the proxy."""

import sys

from .cli import main

sys.exit(main())
