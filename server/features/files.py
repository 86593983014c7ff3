"""Feature files: CSV or Parquet, one row per entity, its id column and some of its fields.

A file need not have every field (the absent ones are left as they are); an empty cell
means the value is absent, so the field's default applies. Cells are checked and made
canonical by FieldSpec.to_text; errors name the file, the row and the column.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from switchyard.runtimes.errors import InvalidArgument
from switchyard.server.features.definitions import EntitySpec, EntityTable, texts_to_values

CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")


class FeatureFileError(InvalidArgument):
    """A feature file is unreadable or invalid; the message says where."""


@dataclass(frozen=True, slots=True)
class RowBatch:
    ids: list[str]
    field_indexes: list[int]  # the file's field columns, as positions in entity.fields
    texts: list[list[str | None]]  # [row][column] canonical text, None where absent


def read_batches(path: Path, entity: EntitySpec, batch_size_rows: int) -> Iterator[RowBatch]:
    """The checked rows of a feature file, batch_size_rows at a time."""
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        rows = _csv_rows(path)
    elif suffix in PARQUET_SUFFIXES:
        rows = _parquet_rows(path, batch_size_rows)
    else:
        raise FeatureFileError(f"{path}: unsupported file type (use .csv or .parquet)")
    try:
        header = next(rows)[1]
    except StopIteration:
        raise FeatureFileError(f"{path}: the file is empty (expected a header row)") from None
    id_position, field_indexes = _check_header(path, entity, header)
    fields = [entity.fields[i] for i in field_indexes]
    batch = RowBatch([], field_indexes, [])
    for where, cells in rows:
        if len(cells) != len(header):
            raise FeatureFileError(f"{path}: {where}: {len(cells)} cells, {len(header)} columns")
        entity_id = cells[id_position]
        entity_id = "" if entity_id is None else str(entity_id).strip()
        if not entity_id:
            raise FeatureFileError(f"{path}: {where}, column '{entity.id_column}': empty id")
        texts = []
        field_cells = [c for i, c in enumerate(cells) if i != id_position]
        for spec, raw in zip(fields, field_cells, strict=True):
            try:
                texts.append(spec.to_text(raw))
            except ValueError as exc:
                raise FeatureFileError(f"{path}: {where}, column '{spec.name}': {exc}") from None
        batch.ids.append(entity_id)
        batch.texts.append(texts)
        if len(batch.ids) >= batch_size_rows:
            yield batch
            batch = RowBatch([], field_indexes, [])
    if batch.ids:
        yield batch


def read_table(path: Path, entity: EntitySpec) -> EntityTable:
    """A whole feature file as a table: what the memory store serves, what training reads."""
    ids: list[str] = []
    values_parts, present_parts = [], []
    for batch in read_batches(path, entity, batch_size_rows=10_000):
        values = np.tile(entity.defaults, (len(batch.ids), 1))
        present = np.zeros(values.shape, dtype=bool)
        for column, field_index in enumerate(batch.field_indexes):
            found = [(r, text) for r, row in enumerate(batch.texts) if (text := row[column])]
            rows = [r for r, _ in found]
            values[rows, field_index] = texts_to_values([text for _, text in found])
            present[rows, field_index] = True
        ids += batch.ids
        values_parts.append(values)
        present_parts.append(present)
    shape = (0, len(entity.fields))
    return EntityTable(
        entity,
        tuple(ids),
        np.vstack(values_parts) if values_parts else np.empty(shape, np.float32),
        np.vstack(present_parts) if present_parts else np.empty(shape, bool),
    )


def count_rows(path: Path) -> int | None:
    """The number of data rows when the file says so cheaply (Parquet), else None."""
    if path.suffix.lower() not in PARQUET_SUFFIXES:
        return None
    rows: int = _parquet_file(path).metadata.num_rows  # pyarrow ships no types
    return rows


def _check_header(path: Path, entity: EntitySpec, header: Sequence[Any]) -> tuple[int, list[int]]:
    names = [str(name).strip() for name in header]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise FeatureFileError(f"{path}: columns repeat: {repeated}")
    if entity.id_column not in names:
        raise FeatureFileError(
            f"{path}: no id column '{entity.id_column}' for entity '{entity.name}' "
            f"(columns: {names})"
        )
    unknown = [n for n in names if n != entity.id_column and n not in entity.field_index]
    if unknown:
        raise FeatureFileError(
            f"{path}: unknown columns {unknown} for entity '{entity.name}' "
            f"(fields: {[f.name for f in entity.fields]})"
        )
    field_indexes = [entity.field_index[n] for n in names if n != entity.id_column]
    return names.index(entity.id_column), field_indexes


def _csv_rows(path: Path) -> Iterator[tuple[str, list[Any]]]:
    """(where, cells) for the header and then each row; `where` is "line N" for errors."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            for cells in reader:
                if cells:  # blank lines
                    yield f"line {reader.line_num}", cells
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise FeatureFileError(f"{path}: cannot read: {exc}") from None


def _parquet_file(path: Path) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise FeatureFileError(
            f"{path}: reading Parquet files needs pyarrow (pip install pyarrow)"
        ) from None
    try:
        return pq.ParquetFile(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise FeatureFileError(f"{path}: cannot read: {exc}") from None


def _parquet_rows(path: Path, batch_size_rows: int) -> Iterator[tuple[str, list[Any]]]:
    parquet = _parquet_file(path)
    yield "header", list(parquet.schema_arrow.names)
    row = 0
    for record_batch in parquet.iter_batches(batch_size=batch_size_rows):
        columns = [column.to_pylist() for column in record_batch.columns]
        for cells in zip(*columns, strict=True):
            row += 1
            yield f"row {row}", list(cells)
