"""Dask engine: reads and writes through the Dask cluster the job is connected to."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from include.etl.engines import parquet_rows
from include.etl.reader import DROPPED, REJECT_COLUMNS

if TYPE_CHECKING:
    from include.etl.contract import Dataset
    from include.etl.csvfile import Block, Header

log = logging.getLogger(__name__)

# Files up to this size are read as one partition; larger ones in blocks of about this size.
BLOCK_BYTES = 64 * 2**20


def parse_block_frame(path: str, block: Block, header: Header, dataset: Dataset, ds: str | None) -> Any:
    """One block of records -> a pandas frame of :func:`include.etl.reader.parse_block`'s table (on a worker)."""
    from include.etl.reader import parse_block, to_pandas

    return to_pandas(parse_block(path, block, header, dataset, ds))


def explode_partition(part: Any, column: str, list_type: Any) -> Any:
    """One pandas partition with a row per element of its list ``column`` (see ``DaskEngine.explode``)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    values = pa.array(part[column], type=list_type, from_pandas=True)
    parents = pc.list_parent_indices(values).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(values)
    out = part.drop(columns=[column]).iloc[parents].reset_index(drop=True)
    for name, array in _element_columns(column, flat).items():
        out[name] = pd.Series(pd.arrays.ArrowExtensionArray(array), index=out.index)
    return out


def _element_columns(column: str, flat: Any) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_struct(flat.type):
        return {f"{column}_{f.name}": pc.struct_field(flat, [i]) for i, f in enumerate(flat.type)}
    return {column: flat}


def text_as_string(frame: Any) -> dict[str, Any]:
    """``to_parquet`` overrides: the frame's text columns written as Arrow ``string``.

    Group-bys and joins hand back pandas ``string[pyarrow]`` (``StringDtype``, Dask's string
    conversion), which pyarrow writes as ``large_string``: the same frame would then be written
    with other types than by Spark, and than the empty partitions of a day without data, both
    ``string``. Other columns keep Dask's inference.
    """
    import pandas as pd
    import pyarrow as pa

    def is_text(dtype: Any) -> bool:
        if isinstance(dtype, pd.ArrowDtype):
            return pa.types.is_string(dtype.pyarrow_dtype) or pa.types.is_large_string(dtype.pyarrow_dtype)
        return isinstance(dtype, pd.StringDtype)

    return {str(name): pa.string() for name, dtype in frame.dtypes.items() if is_text(dtype)}


def _fsspec(filesystem: Any) -> Any:
    """Dask's filesystem argument for a pyarrow filesystem (an S3 lake): fsspec's wrapper of it,
    so that reads and writes take the same code path as on local disk (a pyarrow filesystem
    given as is makes Dask read ``ds=...`` directories as a partition column)."""
    if filesystem is None:
        return "fsspec"
    from fsspec.implementations.arrow import ArrowFSWrapper

    return ArrowFSWrapper(filesystem)


def _to_parquet(frame: Any, path: str, filesystem: Any) -> Any:
    """The delayed write of ``frame`` into the directory ``path`` (text as ``string``)."""
    extra = {"filesystem": _fsspec(filesystem)} if filesystem is not None else {}
    return frame.to_parquet(path, write_index=False, schema=text_as_string(frame), compute=False, **extra)


def _empty(schema: Any, arrow: bool = False) -> Any:
    """An empty one-partition frame of ``schema`` (a day without data)."""
    import dask.dataframe as dd
    import pandas as pd

    table = schema.empty_table()
    return dd.from_pandas(table.to_pandas(types_mapper=pd.ArrowDtype) if arrow else table.to_pandas(), npartitions=1)


class DaskEngine:
    """Every computation runs on this engine's client's cluster (never on dask's global default scheduler)."""

    name = "dask"

    def __init__(self, client: Any) -> None:
        self.client = client

    def read_csv(self, path: str, dataset: Dataset, *, ds: str | None = None, block_bytes: int = BLOCK_BYTES) -> Any:
        """The file as one partition per block of whole records (see :mod:`include.etl.reader`)."""
        import dask
        import dask.dataframe as dd

        from include.etl.csvfile import plan_blocks, read_header, survey_block
        from include.etl.reader import empty_table, to_pandas

        header = read_header(path, dataset)

        def survey(blocks: list[Block]) -> list[Any]:
            tasks = [dask.delayed(survey_block)(path, b, dataset.format) for b in blocks]
            return list(dask.compute(*tasks, scheduler=self.client))

        blocks = plan_blocks(path, header, dataset, block_bytes, survey)
        log.info("reading %s in %s block(s) of whole records", path, len(blocks))
        parts = [dask.delayed(parse_block_frame)(path, b, header, dataset, ds) for b in blocks]
        return dd.from_delayed(parts, meta=to_pandas(empty_table(dataset)), verify_meta=False)

    def write_split(self, parsed: Any, accepted_dir: str, rejects_dir: str,
                    filesystem: Any = None) -> tuple[int, int, int]:
        import dask

        names = [c for c in parsed.columns if c not in REJECT_COLUMNS]
        ok = parsed["_reason"].isna()
        dropped = parsed["_reason"].fillna("") == DROPPED
        accepted = parsed[ok][names]
        rejects = parsed[~ok & ~dropped][list(REJECT_COLUMNS)]
        _, _, n_ok, n_bad, n_dropped = dask.compute(
            _to_parquet(accepted, accepted_dir, filesystem),
            _to_parquet(rejects, rejects_dir, filesystem),
            ok.sum(),
            (~ok & ~dropped).sum(),
            dropped.sum(),
            scheduler=self.client,
        )
        return int(n_ok), int(n_bad), int(n_dropped)

    def read_parquet(self, files: Sequence[str], schema: Any, filesystem: Any = None) -> Any:
        import dask.dataframe as dd

        if not files:
            return _empty(schema)
        # No hive partitioning: the ``ds=...`` directory name must not become a column.
        return dd.read_parquet(list(files), dataset={"partitioning": None}, filesystem=_fsspec(filesystem))

    def read_parquets(self, files: Sequence[str], schema: Any, filesystem: Any = None) -> Any:
        """Parquet ``files`` (a period's daily partitions) as one frame of exactly ``schema`` (a
        ``pyarrow.Schema``): each file read as, or cast to, its types whatever the file's own
        metadata says, as Arrow-backed columns.

        Small files are read together (:data:`BLOCK_BYTES` per partition), not one partition per
        directory: a month of days is one partition. Over 16 partitions or more, Dask (2026.8)
        gives a group-by several output partitions (``split_out``) and then fails to plan a join
        of a named aggregation's result (how narwhals aggregates): ``KeyError: "['<key>'] not in
        index"`` (``ColumnsSetter`` looks the group keys up among the aggregated columns).
        """
        import dask.dataframe as dd

        if not files:
            return _empty(schema, arrow=True)
        return dd.read_parquet(list(files), columns=list(schema.names), dataset={"partitioning": None, "schema": schema},
                               dtype_backend="pyarrow", aggregate_files=True, blocksize=BLOCK_BYTES,
                               filesystem=_fsspec(filesystem))

    def write_parquet(self, frame: Any, path: str, filesystem: Any = None) -> int:
        return self.write_parquets({path: frame}, filesystem)[path]

    def write_parquets(self, frames: dict[str, Any], filesystem: Any = None) -> dict[str, int]:
        """One ``compute`` for all frames (graphs built from the same input read it once); each
        directory's row count from its files' footers, not from a second graph per frame (planning
        it cost as much as the write on a small day)."""
        import dask

        paths = list(frames)
        dask.compute(*[_to_parquet(frames[p], p, filesystem) for p in paths], scheduler=self.client)
        return {p: parquet_rows(p, filesystem) for p in paths}

    def explode(self, frame: Any, column: str, list_type: Any = None) -> Any:
        """See :meth:`include.etl.engines.Engine.explode`; ``list_type``: the column's Arrow list type
        (needed when the frame holds it as Python objects)."""
        import pandas as pd
        import pyarrow as pa

        if list_type is None:
            list_type = frame._meta[column].dtype.pyarrow_dtype
        meta = frame._meta.drop(columns=[column])
        for name, array in _element_columns(column, pa.array([], list_type.value_type)).items():
            meta[name] = pd.Series(pd.arrays.ArrowExtensionArray(array), index=meta.index)
        return frame.map_partitions(explode_partition, column, list_type, meta=meta)

    def run_noop(self) -> None:
        self.client.submit(int, 0, pure=False).result()
