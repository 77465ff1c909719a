"""Site application: read a clinical cine MRI study, segment it, write DICOM SEG and SR, NIfTI, report, PNGs.

DICOM in and out is the :mod:`cardiolora.dicom` package (reader stages, SEG, SR). Modules here:
:mod:`~cardiolora.site.nifti_io` (NIfTI in and out), :mod:`~cardiolora.site.model` (the site's
network: plain weights or base + merged adapter), :mod:`~cardiolora.site.postprocess` (anatomical
clean-up transforms), :mod:`~cardiolora.site.report` and :mod:`~cardiolora.site.figures` (report and pictures),
:mod:`~cardiolora.site.app` (the pipeline, batches, exit codes) and
:mod:`~cardiolora.site.command` (``cardiolora segment``). See ``inference/docs/README.md``.
"""
