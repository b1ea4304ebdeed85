"""`python -m polypsynth.cli`."""

import sys

from polypsynth.cli import main

sys.exit(main())
