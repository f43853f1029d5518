"""`python -m core.jobs <job dir>`: the child process of a background job (see core.jobs)."""
import sys
from pathlib import Path

from core.jobs import run_child

if __name__ == "__main__":
    sys.exit(run_child(Path(sys.argv[1])))
