"""`python -m orchestratord_server` runs the `orchestratord` command."""

import sys

from orchestratord_server.cli import main

sys.exit(main())
