"""Rate-My-LoRA job (λ_0 = 0.2).

`python jobs/rate_my_lora/job.py --export` writes ./exported; see jobs/README.md.
"""

import sys
from pathlib import Path

from cardiolora.fl.jobs import job_main

if __name__ == "__main__":
    sys.exit(job_main("rate_my_lora", sys.argv[1:], Path(__file__).resolve().parent))
