"""Full-weight FedAvg job (the paper's † baseline).

`python jobs/fedavg_full/job.py --export` writes ./exported; see jobs/README.md.
"""

import sys
from pathlib import Path

from cardiolora.fl.jobs import job_main

if __name__ == "__main__":
    sys.exit(job_main("fedavg_full", sys.argv[1:], Path(__file__).resolve().parent))
