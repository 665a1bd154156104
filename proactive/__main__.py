import sys

from proactive.cli import main

sys.exit(main())
