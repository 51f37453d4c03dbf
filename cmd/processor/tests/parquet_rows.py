"""Reads every published Parquet file of a parquet sink's directory with pyarrow, as a reader of
the data lake would (directories and files whose names start with '.' or '_' are skipped), and
prints one JSON object: {"rows": [...], "files": [...]}. Each row is an object of its columns,
timestamps as epoch milliseconds and JSON text columns (marked `dataflow.type: json` in their
field metadata) parsed; each file is {"path", "partition", "row_groups": [rows per group],
"compression", "schema", and with COLUMN given "distinct": that column's distinct values}.

    python parquet_rows.py DIR [COLUMN]
"""

import json
import os
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def published(root):
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith((".", "_")))
        for name in sorted(files):
            if name.endswith(".parquet") and not name.startswith((".", "_")):
                yield os.path.join(directory, name)


def main(root, distinct=None):
    rows = []
    files = []
    for path in published(root):
        parquet = pq.ParquetFile(path)
        table = parquet.read()
        columns = {}
        for field, column in zip(table.schema, table.columns):
            metadata = field.metadata or {}
            if pa.types.is_timestamp(field.type):
                columns[field.name] = pc.cast(column, pa.int64()).to_pylist()
            elif metadata.get(b"dataflow.type") == b"json":
                columns[field.name] = [None if v is None else json.loads(v) for v in column.to_pylist()]
            else:
                columns[field.name] = column.to_pylist()
        names = list(columns)
        for index in range(table.num_rows):
            rows.append({name: columns[name][index] for name in names})
        metadata = parquet.metadata
        described = {}
        if distinct is not None:
            described["distinct"] = sorted(set(columns[distinct]))
        files.append({
            **described,
            "path": os.path.relpath(path, root),
            "partition": os.path.relpath(os.path.dirname(path), root),
            "row_groups": [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)],
            "compression": metadata.row_group(0).column(0).compression if metadata.num_row_groups else None,
            "schema": {field.name: str(field.type) for field in table.schema},
        })
    json.dump({"rows": rows, "files": files}, sys.stdout)


if __name__ == "__main__":
    main(*sys.argv[1:])
