import sys

from videomask.cli import main

sys.exit(main())
