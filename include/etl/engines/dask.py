"""Dask engine: reads and writes through the Dask cluster the job is connected to.

A frame Dask would hold as one partition (a CSV file of one parse block, one Parquet file of at
most :data:`LOCAL_MAX_BYTES`: a small daily file, a reference file) is read, transformed and
written as a pandas frame where the job's driver runs (on a worker of the cluster under the
runtime or an attached cluster), with the same code per partition as on Dask: planning a
dask-expr graph for one partition cost more than the work (docs/benchmarks/profile.md). Larger
inputs, and several files at once (a period's rollup), are Dask frames. Both write the same files
and types (tests/include/test_dask_local.py).
"""

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
# An input of one partition up to this size is a pandas frame (see above); -1: always Dask frames.
LOCAL_MAX_BYTES = BLOCK_BYTES


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


def _one_partition(files: Sequence[str], filesystem: Any) -> bool:
    """Whether Parquet ``files`` are one file of at most :data:`LOCAL_MAX_BYTES` (one Dask partition)."""
    import pyarrow.fs as pafs

    return len(files) == 1 and (filesystem or pafs.LocalFileSystem()).get_file_info(files[0]).size <= LOCAL_MAX_BYTES


def _read_local(file: str, schema: Any, filesystem: Any, exact: bool) -> Any:
    """One Parquet file as the pandas frame Dask's one partition of it is: ``exact``, of exactly
    ``schema`` as Arrow-backed columns (``read_parquets``); else typed as the file says
    (``read_parquet``). Converted by Dask's own Arrow-to-pandas conversion (a class method of its
    pinned version), so that both give the same dtypes (tests/include/test_dask_local.py)."""
    import pyarrow.dataset as pads
    from dask.dataframe.io.parquet.arrow import ArrowDatasetEngine
    from dask.dataframe.utils import pyarrow_strings_enabled

    dataset = pads.dataset([file], schema=schema if exact else None, format="parquet", partitioning=None,
                           filesystem=filesystem)
    table = dataset.to_table(columns=list(schema.names) if exact else None)
    return ArrowDatasetEngine._arrow_table_to_pandas(table, None, dtype_backend="pyarrow" if exact else None,
                                                     convert_string=pyarrow_strings_enabled())


def _write_local(frame: Any, path: str, filesystem: Any) -> int:
    """A pandas frame as the one Parquet file Dask's ``to_parquet`` writes for one partition
    (``part.0.parquet`` in the new directory ``path``, text as ``string``); its row count."""
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    fs = filesystem or pafs.LocalFileSystem()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    text = text_as_string(frame)
    table = table.cast(pa.schema([f.with_type(text.get(f.name, f.type)) for f in table.schema], table.schema.metadata))
    fs.create_dir(path)
    pq.write_table(table, f"{path}/part.0.parquet", filesystem=fs)
    return table.num_rows


def _is_local(frame: Any) -> bool:
    import pandas as pd

    return isinstance(frame, pd.DataFrame)


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

        from include.etl.csvfile import even_block_bytes, plan_blocks, read_header, survey_block
        from include.etl.reader import empty_table, to_pandas

        header = read_header(path, dataset)
        if header.size - header.data_offset > block_bytes:  # several blocks: as many per worker thread
            slots = sum(self.client.nthreads().values())
            block_bytes = even_block_bytes(header.size - header.data_offset, block_bytes, slots)

        def survey(blocks: list[Block]) -> list[Any]:
            tasks = [dask.delayed(survey_block)(path, b, dataset.format) for b in blocks]
            return list(dask.compute(*tasks, scheduler=self.client))

        blocks = plan_blocks(path, header, dataset, block_bytes, survey)
        if len(blocks) == 1 and blocks[0].length <= LOCAL_MAX_BYTES:
            log.info("reading %s as one block of whole records, as one pandas frame (one partition)", path)
            return parse_block_frame(path, blocks[0], header, dataset, ds)
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
        if _is_local(parsed):
            return (_write_local(accepted, accepted_dir, filesystem), _write_local(rejects, rejects_dir, filesystem),
                    int(dropped.sum()))
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
        if _one_partition(files, filesystem):
            return _read_local(files[0], schema, filesystem, exact=False)
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
        if _one_partition(files, filesystem):
            return _read_local(files[0], schema, filesystem, exact=True)
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

        local = {p: _write_local(f, p, filesystem) for p, f in frames.items() if _is_local(f)}
        paths = [p for p in frames if p not in local]
        dask.compute(*[_to_parquet(frames[p], p, filesystem) for p in paths], scheduler=self.client)
        return {p: local[p] if p in local else parquet_rows(p, filesystem) for p in frames}

    def explode(self, frame: Any, column: str, list_type: Any = None) -> Any:
        """See :meth:`include.etl.engines.Engine.explode`; ``list_type``: the column's Arrow list type
        (needed when the frame holds it as Python objects)."""
        import pandas as pd
        import pyarrow as pa

        if list_type is None:
            list_type = (frame if _is_local(frame) else frame._meta)[column].dtype.pyarrow_dtype
        if _is_local(frame):
            return explode_partition(frame, column, list_type)
        meta = frame._meta.drop(columns=[column])
        for name, array in _element_columns(column, pa.array([], list_type.value_type)).items():
            meta[name] = pd.Series(pd.arrays.ArrowExtensionArray(array), index=meta.index)
        return frame.map_partitions(explode_partition, column, list_type, meta=meta)

    def align(self, frames: Sequence[Any]) -> list[Any]:
        """The one-partition pandas frames among ``frames`` as one-partition Dask frames when any
        other is a Dask frame (narwhals joins frames of one backend only); else ``frames``."""
        import dask.dataframe as dd

        if all(_is_local(f) for f in frames):
            return list(frames)
        return [dd.from_pandas(f, npartitions=1) if _is_local(f) else f for f in frames]

    def run_noop(self) -> None:
        self.client.submit(int, 0, pure=False).result()
