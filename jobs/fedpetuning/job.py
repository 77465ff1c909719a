"""FedPETuning job (λ_0 = 0: size-weighted LoRA averaging).

`python jobs/fedpetuning/job.py --export` writes ./exported; see jobs/README.md.
"""

import sys
from pathlib import Path

from cardiolora.fl.jobs import job_main

if __name__ == "__main__":
    sys.exit(job_main("fedpetuning", sys.argv[1:], Path(__file__).resolve().parent))
