"""The Client API script of the three cardiolora jobs, run by FLARE on every site (in process).

Its loop (``flare.receive()`` -> the task -> ``flare.send(FLModel(...))``) is
``cardiolora.fl.client.main`` in the cardiolora package that every participant installs; the job
folder carries only this launcher, never a second copy of the site code.
"""

import sys

try:
    from cardiolora.fl.client import main
except ModuleNotFoundError as err:
    if err.name != "cardiolora":
        raise
    raise ModuleNotFoundError("this site has no `cardiolora` package: install it (see jobs/README.md)") from err

if __name__ == "__main__":
    main(sys.argv[1:])
