"""Run the proxy as python -m goproxy."""

import sys

from .cli import main

sys.exit(main())
