"""Dense vectors on disk, aligned with the chunk rows of a knowledge base, and nearest-neighbour search.

Layout of a vector folder::

    vectors.npy     float32 matrix (rows × dimension), row i is the embedding of chunk row i, each row
                    L2-normalised, so a dot product is the cosine similarity
    hnsw.faiss      only for large indexes: a faiss HNSW graph (inner product) over the same rows
    vectors.json    format, version, rows, dimension, whether hnsw.faiss exists, and the caller's
                    metadata (e.g. which embedder made the vectors); written last

Trade-offs:

* `vectors.npy` is opened memory-mapped: opening costs nothing, the operating system pages rows in as
  searches touch them and can drop them again under memory pressure, and several processes searching
  one index share the pages.
* Up to `HNSW_THRESHOLD` rows (200k) the search is exact brute force (one matrix-vector product of
  384-d rows: about 5 ms at 100k rows on 2 cores, growing linearly to ~45 ms at 1M). Beyond that a
  faiss HNSW graph answers in under a millisecond (0.4 ms at 1M rows) at the price of approximate
  results (recall@10 ≈ 0.95–0.97 against exact search at the default `ef_search`, measured by
  `bench/retrieval.py`), a build of ~4 minutes per million rows, and a second copy of the vectors inside
  the graph file. faiss (`deepdraft[dense]`) is optional: without it large indexes use brute force.
* A row filter (`allowed`) is exact: brute force when few rows are allowed (the graph walk would wander
  through excluded rows), otherwise faiss's ID selector, with a brute-force retry if the filtered walk
  finds fewer than `k` rows.
* Writes stream batches straight to disk (the .npy header is patched with the final row count), so an
  index larger than memory can be written, and are atomic (`deepdraft.fsutil`): everything goes to a
  temporary sibling folder, is fsync-ed, and renamed into place.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import tempfile
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from deepdraft.errors import KnowledgeBaseError
from deepdraft.fsutil import fsync_tree, swap_into_place

log = logging.getLogger(__name__)

FORMAT = "deepdraft-vectors"
FORMAT_VERSION = 1
VECTORS_FILE = "vectors.npy"
HNSW_FILE = "hnsw.faiss"
MANIFEST_FILE = "vectors.json"

HNSW_THRESHOLD = 200_000
"""From this many rows on, an HNSW graph is built: brute force would take over ~10 ms a query."""
HNSW_NEIGHBOURS = 32  # faiss's M: graph degree; 32 is the usual balance of recall, memory and build time
HNSW_EF_CONSTRUCTION = 64
DEFAULT_EF_SEARCH = 128
"""Candidate list size of a graph search: higher is more exact and slower (tuned by bench/retrieval.py)."""

_ADD_BATCH = 65_536  # rows handed to faiss at a time while building: bounds the memory of a build
_GATHER_FRACTION = 0.25  # below this share of allowed rows, score only those rows instead of all
_GATHER_BLOCK = 16_384

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]


class VectorIndex:
    """An open vector folder. Thread-safe for concurrent `search` calls."""

    def __init__(
        self,
        folder: Path,
        vectors: FloatArray,
        manifest: dict[str, Any],
        *,
        ef_search: int = DEFAULT_EF_SEARCH,
    ) -> None:
        self._folder = folder
        self._vectors = vectors
        self._manifest = manifest
        self.ef_search = ef_search
        self._graph: Any = None
        self._graph_lock = threading.Lock()

    # -- writing -----------------------------------------------------------------------------------

    @classmethod
    def write(
        cls,
        folder: Path,
        batches: Iterable[npt.ArrayLike],
        dimension: int,
        *,
        metadata: Mapping[str, Any] | None = None,
        hnsw_threshold: int = HNSW_THRESHOLD,
    ) -> VectorIndex:
        """Write the rows of `batches` (arrays of shape (n, dimension)) to `folder`, atomically.

        Rows are L2-normalised on the way (an all-zero row stays zero and never matches). Any vector
        folder already at `folder` is replaced; any other non-empty folder is refused. `metadata`
        (JSON-serialisable) is kept in the manifest for the caller.
        """
        if dimension < 1:
            raise ValueError(f"dimension must be positive (got {dimension})")
        folder = Path(folder)
        _check_replaceable(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f".{folder.name}.building-", dir=folder.parent))
        try:
            rows = _write_matrix(building / VECTORS_FILE, batches, dimension)
            hnsw = rows >= hnsw_threshold and _build_graph(building, dimension)
            manifest = {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "rows": rows,
                "dimension": dimension,
                "hnsw": (
                    {
                        "M": HNSW_NEIGHBOURS,
                        "ef_construction": HNSW_EF_CONSTRUCTION,
                        "threshold": hnsw_threshold,
                    }
                    if hnsw
                    else None
                ),
                "metadata": dict(metadata or {}),
            }
            (building / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
            fsync_tree(building)
            swap_into_place(building, folder)
        except FileExistsError as exc:
            shutil.rmtree(building, ignore_errors=True)
            raise KnowledgeBaseError(
                f"another process wrote dense vectors to {folder} at the same time"
            ) from exc
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        return cls.open(folder)

    # -- opening -----------------------------------------------------------------------------------

    @classmethod
    def open(cls, folder: Path, *, ef_search: int = DEFAULT_EF_SEARCH) -> VectorIndex:
        """Open a written folder (memory-mapped); `KnowledgeBaseError` if missing or damaged."""
        folder = Path(folder)
        manifest = _read_manifest(folder)
        try:
            vectors = np.load(folder / VECTORS_FILE, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise KnowledgeBaseError(f"dense vectors at {folder} are damaged ({exc}); rebuild them") from exc
        expected = (manifest["rows"], manifest["dimension"])
        if vectors.dtype != np.float32 or vectors.shape != expected:
            raise KnowledgeBaseError(f"dense vectors at {folder} do not match their manifest; rebuild them")
        if manifest.get("hnsw") and not (folder / HNSW_FILE).is_file():
            raise KnowledgeBaseError(f"dense vectors at {folder} miss {HNSW_FILE}; rebuild them")
        return cls(folder, vectors, manifest, ef_search=ef_search)

    # -- searching ---------------------------------------------------------------------------------

    def search(
        self, query: npt.ArrayLike, k: int, allowed: BoolArray | None = None
    ) -> list[tuple[int, float]]:
        """The `k` rows most similar to `query` as (row, cosine), best first; ties by row number.

        `allowed` (one bool per row) restricts the search to the rows that are True.
        """
        vector = np.asarray(query, dtype=np.float32).reshape(-1)
        if vector.shape[0] != self.dimension:
            raise ValueError(f"query has dimension {vector.shape[0]}, the index {self.dimension}")
        if allowed is not None and allowed.shape != (len(self),):
            raise ValueError(f"allowed has shape {allowed.shape}, the index {len(self)} rows")
        norm = float(np.linalg.norm(vector))
        if k <= 0 or len(self) == 0 or norm == 0.0 or not np.isfinite(norm):
            return []
        vector = vector / norm
        permitted = len(self) if allowed is None else int(np.count_nonzero(allowed))
        if permitted == 0:
            return []
        # Exact scoring of a few allowed rows beats a graph walk that mostly meets excluded rows.
        graph = self._load_graph() if permitted >= self._graph_threshold else None
        if graph is not None:
            hits = self._graph_search(graph, vector, k, allowed)
            if len(hits) >= min(k, permitted):
                return hits
            # The filtered walk ran out of allowed neighbours before finding k: the exact way is sure.
        return self._exact_search(vector, k, allowed, permitted)

    # -- the rest ----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._vectors.shape[0])

    @property
    def dimension(self) -> int:
        return int(self._vectors.shape[1])

    @property
    def vectors(self) -> FloatArray:
        """The memory-mapped matrix (read-only), e.g. to copy the rows of unchanged chunks."""
        return self._vectors

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._manifest.get("metadata") or {})

    @property
    def path(self) -> Path:
        return self._folder

    @property
    def has_graph(self) -> bool:
        """Whether large searches go through the HNSW graph (else they are exact brute force)."""
        return bool(self._manifest.get("hnsw")) and _faiss() is not None

    @property
    def _graph_threshold(self) -> int:
        graph = self._manifest.get("hnsw") or {}
        return int(graph.get("threshold", HNSW_THRESHOLD))

    def _exact_search(
        self, vector: FloatArray, k: int, allowed: BoolArray | None, permitted: int
    ) -> list[tuple[int, float]]:
        if allowed is not None and permitted < _GATHER_FRACTION * len(self):
            candidates = np.flatnonzero(allowed)
            scores = np.empty(candidates.shape[0], dtype=np.float32)
            # In blocks: fancy indexing copies the rows, and a block bounds that copy's size.
            for start in range(0, candidates.shape[0], _GATHER_BLOCK):
                block = candidates[start : start + _GATHER_BLOCK]
                scores[start : start + block.shape[0]] = self._vectors[block] @ vector
        else:
            candidates = None
            scores = self._vectors @ vector
            if allowed is not None:
                scores = np.where(allowed, scores, -np.inf)
        count = min(k, permitted)
        top = np.argpartition(-scores, count - 1)[:count] if count < scores.shape[0] else np.arange(count)
        rows = top if candidates is None else candidates[top]
        order = np.lexsort((rows, -scores[top]))
        return [(int(rows[i]), float(scores[top[i]])) for i in order]

    def _graph_search(
        self, graph: Any, vector: FloatArray, k: int, allowed: BoolArray | None
    ) -> list[tuple[int, float]]:
        faiss = _faiss()
        ef_search = max(self.ef_search, k)
        if allowed is None:
            params = faiss.SearchParametersHNSW(efSearch=ef_search)
        else:
            # Locals, so that the bitmap and the selector outlive the C++ call that reads them.
            bitmap = np.packbits(allowed, bitorder="little")
            selector = faiss.IDSelectorBitmap(bitmap)
            params = faiss.SearchParametersHNSW(efSearch=ef_search, sel=selector)
        scores, rows = graph.search(vector.reshape(1, -1), k, params=params)
        hits = [(int(r), float(s)) for r, s in zip(rows[0], scores[0], strict=True) if r >= 0]
        hits.sort(key=lambda hit: (-hit[1], hit[0]))
        return hits

    def _load_graph(self) -> Any:
        """The HNSW graph, read on first use (memory-mapped where faiss can); None without one."""
        if not self._manifest.get("hnsw"):
            return None
        faiss = _faiss()
        if faiss is None:
            return None
        with self._graph_lock:
            if self._graph is None:
                path = str(self._folder / HNSW_FILE)
                try:
                    self._graph = faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
                except RuntimeError:
                    try:  # older faiss: no memory mapping of the stored vectors
                        self._graph = faiss.read_index(path)
                    except RuntimeError as exc:
                        raise KnowledgeBaseError(
                            f"the HNSW graph at {path} is damaged ({exc}); rebuild the vectors"
                        ) from exc
        return self._graph


# -- helpers ----------------------------------------------------------------------------------------


def _write_matrix(path: Path, batches: Iterable[npt.ArrayLike], dimension: int) -> int:
    """Stream `batches` into a .npy file; returns the row count."""
    rows = 0
    with path.open("wb") as out:
        header = _npy_header(0, dimension)
        out.write(header)
        for batch in batches:
            matrix = np.asarray(batch, dtype=np.float32)
            if matrix.size == 0:
                continue
            if matrix.ndim != 2 or matrix.shape[1] != dimension:
                raise ValueError(f"a batch of vectors has shape {matrix.shape}, expected (n, {dimension})")
            if not np.isfinite(matrix).all():
                raise ValueError("a batch of vectors contains NaN or infinity")
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            norms[norms == 0] = 1
            matrix = (matrix / norms).astype(np.float32, copy=False)
            out.write(matrix.astype("<f4", copy=False).tobytes(order="C"))
            rows += matrix.shape[0]
        final = _npy_header(rows, dimension)
        # numpy pads the header so that the row count can grow in place (for exactly this use).
        assert len(final) == len(header), "numpy changed its .npy header padding"
        out.seek(0)
        out.write(final)
    return rows


def _npy_header(rows: int, dimension: int) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "<f4", "fortran_order": False, "shape": (rows, dimension)}
    )
    return buffer.getvalue()


def _build_graph(folder: Path, dimension: int) -> bool:
    """Build the HNSW graph over the vectors in `folder`; False (brute force) without faiss."""
    faiss = _faiss()
    if faiss is None:
        log.warning("faiss is not installed: large vector searches use brute force (pip install faiss-cpu)")
        return False
    vectors = np.load(folder / VECTORS_FILE, mmap_mode="r")
    graph = faiss.IndexHNSWFlat(dimension, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    for start in range(0, vectors.shape[0], _ADD_BATCH):
        graph.add(np.ascontiguousarray(vectors[start : start + _ADD_BATCH]))
    faiss.write_index(graph, str(folder / HNSW_FILE))
    return True


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise KnowledgeBaseError(f"no dense vectors at {folder} ({MANIFEST_FILE} missing)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KnowledgeBaseError(f"dense vectors at {folder} are damaged ({exc}); rebuild them") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise KnowledgeBaseError(f"{folder} does not hold deepdraft dense vectors")
    if manifest.get("version") != FORMAT_VERSION:
        raise KnowledgeBaseError(
            f"dense vectors at {folder} have format version {manifest.get('version')}, this deepdraft "
            f"reads version {FORMAT_VERSION}; rebuild them"
        )
    if not all(isinstance(manifest.get(key), int) for key in ("rows", "dimension")):
        raise KnowledgeBaseError(f"dense vectors at {folder} have a damaged manifest; rebuild them")
    return manifest


def _check_replaceable(folder: Path) -> None:
    """Refuse to replace anything that is not (the remains of) a vector folder: it may be user data."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise KnowledgeBaseError(f"cannot write dense vectors to {folder}: it is a file")
    if any(folder.iterdir()) and not (folder / MANIFEST_FILE).is_file():
        raise KnowledgeBaseError(
            f"cannot write dense vectors to {folder}: the folder is not empty and holds no vectors"
        )
