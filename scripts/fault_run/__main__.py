"""`python -m fault_run` (scripts on PYTHONPATH): the fault run, see run.py."""
import sys

from fault_run.run import main

sys.exit(main())
