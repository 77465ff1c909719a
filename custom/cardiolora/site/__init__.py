"""Site application: read a clinical DICOM study, find its short-axis cine, and process it."""
