"""Dataset I/O: folder imports (collection), validated gRefCOCO / COCO imports, the gRefCOCO export,
whole-store migration, and their command line ``python -m app.dataset``."""
