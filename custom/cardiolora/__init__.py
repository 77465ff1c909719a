"""cardiolora: federated LoRA fine-tuning of cardiac short-axis MRI segmentation.

Rate-My-LoRA (He et al., arXiv 2501.03223) on MONAI bundles and NVIDIA FLARE, with the site
application that segments DICOM cine studies. One importable package: bundles, jobs, the site
application and the tests all import it by dotted path.
"""

from __future__ import annotations

#: The package version, which is also the ``version`` of both bundles' ``metadata.json`` (the LoRA U-Net
#: and the site inference) and their ``required_packages_version["cardiolora"]``: one release
#: (tests/test_zoo.py).
__version__ = "0.4.0"

__all__ = ["__version__"]
