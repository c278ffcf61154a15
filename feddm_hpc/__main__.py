import sys

from feddm_hpc.cli import main

sys.exit(main())
