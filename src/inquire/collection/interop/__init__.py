"""Results that flow into the tools ecologists already use, and marks that flow back.

- :mod:`.inspected`: the inspected part of a saved search with its marks and photo metadata
  (what every export starts from);
- :mod:`.inquire_search`: INQUIRE-Search's CSV, read by its case-study R scripts;
- :mod:`.dwca`: a Darwin Core Archive for GBIF;
- :mod:`.exports`: the format rows and one call per export (CLI and web page);
- :mod:`.marks_import`: marks of an INQUIRE-Search export loaded onto a collection.

See docs/interop.md.
"""
