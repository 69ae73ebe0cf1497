"""``python -m daw_bridge`` runs the command line."""

import sys

from daw_bridge.cli import main

sys.exit(main())
