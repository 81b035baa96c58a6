"""`python -m gpuroof`."""
import sys

from gpuroof.cli import main

sys.exit(main())
