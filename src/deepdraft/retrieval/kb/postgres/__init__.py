"""The KB engine on PostgreSQL + pgvector: one database shared by every reader and writer of a team.

`PostgresKnowledgeBase` (in `store`) has the embedded `KnowledgeBase`'s public methods, so the callers
(`names.open_kb`, the runner, the CLI, the server, MCP) take either. One job per module:

* `store`: the KB object — opening, searching, adding and removing, the summary.
* `database`: DSNs shown without secrets, the connection pool, the registry of KBs, the schema.
* `ingest`: a changed file's documents and chunks into the open transaction (the embedded engine's
  diffing rules, in Postgres's SQL).
* `search`: full text, vectors and their fusion, each one SQL statement; rows back into passages.

Needs the ``postgres`` extra (psycopg, psycopg-pool, pgvector); nothing here is imported until a
Postgres KB is used.
"""
