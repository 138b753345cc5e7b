"""``python -m sdsearch``: the same as the ``sdsearch`` command."""

import sys

from sdsearch.cli import main

sys.exit(main())
