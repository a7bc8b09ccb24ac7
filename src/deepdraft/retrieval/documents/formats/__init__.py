"""The extractors, one module per family of formats; `deepdraft.retrieval.documents.extract` picks one.

`extracted` holds what every extractor returns and the text rules they share, `zipped` the archive
guard of the zip-based formats; `text`, `pdf`, `office` (DOCX, PPTX, XLSX) and `markup` (HTML, EPUB)
each read one family and know nothing of the others.
"""
