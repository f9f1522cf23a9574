"""``python -m platform.report``."""
import sys

from platform.report import main

sys.exit(main())
