"""Web search: providers, fetching and extracting result pages (opt-in; every request is recorded as
egress).
"""
