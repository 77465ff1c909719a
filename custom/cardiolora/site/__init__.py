"""Site application: read a clinical cine MRI study, segment it, write DICOM SEG and SR, NIfTI, report, PNGs.

The stages of the site-inference bundle (``inference/configs/inference.json``), one module each:
:mod:`~cardiolora.site.reader` (DICOM through :mod:`cardiolora.dicom`, or NIfTI through
:mod:`~cardiolora.site.nifti_io`), :mod:`~cardiolora.site.model` (the site's network: plain weights
or base + merged adapter), :mod:`~cardiolora.site.inferer`, :mod:`~cardiolora.site.cleanup` (with
the anatomical rules of :mod:`~cardiolora.site.postprocess`), :mod:`~cardiolora.site.measures`,
:mod:`~cardiolora.site.outputs` (with :mod:`~cardiolora.site.report` and
:mod:`~cardiolora.site.figures`), chained by :mod:`~cardiolora.site.workflow`;
:mod:`~cardiolora.site.app` (studies, commit, outcomes, exit codes) and
:mod:`~cardiolora.site.command` (``cardiolora segment``, its flags built from the bundle's
declaration). See ``inference/docs/README.md``.
"""
