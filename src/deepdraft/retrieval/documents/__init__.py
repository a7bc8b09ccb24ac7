"""Documents: reading files and folders, extracting text from each format, cutting text into passages."""
