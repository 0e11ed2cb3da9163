"""`python -m bridge` is the same as the `feishu-alert-bridge` command."""

import sys

from .cli import main

sys.exit(main())
