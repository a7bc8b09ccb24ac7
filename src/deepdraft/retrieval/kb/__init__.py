"""A knowledge base on disk: documents in, passages out, changed only by whole transactions.

Layout of a KB folder::

    kb.sqlite          the source of truth: files, documents, chunks (text, offsets, page, heading
                       path, index terms), the failures of the last add, and metadata (format version,
                       chunking, analyzer, embedder, revision)
    embeddings.sqlite  a cache of passage vectors keyed by (embedder, sha256 of the embedded text)
    CURRENT            names the generation readers use; replaced atomically (temp + fsync + rename)
    gen-<revision>/    derived search files for one revision: BM25 (bm25s, memory-mapped), the chunk
                       id and document of every BM25 row, dense vectors (`VectorIndex`) when the KB
                       has an embedder, and a manifest with the content fingerprint
    write.lock         `flock`-ed by the one process writing; readers never take it

One job per module; `store` (and `folder` and `names`, above it) import the helpers, never the reverse:

* `store`: `KnowledgeBase`, open for searching and (under the write lock) for changing; how a
  change is made, step by step.
* `folder`: `open_folder_kb`, a folder of documents as a KB built on the fly and cached.
* `names`: named KBs of the workspace (``DEEPDRAFT_HOME/kbs/<name>/``): open, create, list, remove.
* `values`: what the KB reports (`IngestNote`, `AddResult`, `KBInfo`).
* `adding`: reading the files one add names into its transaction, one savepoint per file.
* `ingest`: storing a changed file's documents and chunks, hashing, pruning, choosing documents to
  remove, recording failures.
* `search`: the rows the filters allow, BM25 ranking, ranked rows back into passages.
* `listing`: the KB's summary (`KBInfo`) and its documents.
* `generations`: building, opening, making current, cleaning up and repairing the search files of a
  revision; the embedding cache.
* `schema`: kb.sqlite (schema, format version, connections, metadata).
* `filters`: glob patterns over documents (`--only`, `--exclude`, `kb remove`).
* `lock`: the write lock.

Names with a leading underscore are shared between these modules only: nothing outside the package
uses them (tests aside).
"""
