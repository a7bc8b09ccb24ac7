"""Search indexes: index terms, BM25 and dense vectors, embedders, and fusing their rankings."""
