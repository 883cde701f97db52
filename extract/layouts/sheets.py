"""A collection's metadata sheet (``.xlsx`` as shipped, or a ``.csv`` export of it), bounded.

An xlsx file is a zip of XML parts: it is read from bytes (a FIFO or a device is never opened,
see `cxr.files`), its zip directory checked before anything is inflated (a member larger than
MAX_INFLATED, in all, is a bomb; Python's zipfile holds every member to its declared size),
and its XML parsed by openpyxl, which uses defusedxml (installed with cxr) against entity
expansion. Nothing in it runs: formulas are read as their cached values, macros never load.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from cxr.errors import CxrError
from cxr.extract.layouts.table import read_table
from cxr.files import UnusableFile, read_regular

MAX_SHEET_BYTES = 32 << 20
MAX_INFLATED = 256 << 20
MAX_ROWS = 2_000_000


def read_sheet(file: Path) -> list[dict[str, str]]:
    """The first worksheet's rows as {header: text} (every value as text, blanks as "");
    CxrError naming the file and why it cannot be read."""
    if file.suffix.lower() == ".csv":
        return read_table(file, "metadata sheet")[1]
    try:
        data = read_regular(file, MAX_SHEET_BYTES)
    except (UnusableFile, OSError) as exc:
        raise CxrError(f"{file}: cannot read the metadata sheet ({exc})") from None
    try:
        inflated = sum(i.file_size for i in zipfile.ZipFile(io.BytesIO(data)).infolist())
    except (zipfile.BadZipFile, ValueError) as exc:
        raise CxrError(f"{file}: not an xlsx workbook ({exc})") from None
    if inflated > MAX_INFLATED:
        raise CxrError(
            f"{file}: inflates to {inflated:,} bytes (limit {MAX_INFLATED:,}): not a metadata sheet"
        )
    try:
        import openpyxl
    except ImportError:
        raise CxrError(
            f"{file}: reading xlsx needs openpyxl (pip install openpyxl), or save the sheet as "
            "CSV beside it"
        ) from None
    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        rows = book.worksheets[0].iter_rows(values_only=True)
        header = [_text(v) for v in next(rows, ())]
        found = []
        for index, values in enumerate(rows):
            if index >= MAX_ROWS:
                raise CxrError(f"{file}: more than {MAX_ROWS:,} rows: not a metadata sheet")
            found.append(dict(zip(header, map(_text, values), strict=False)))
        book.close()
    except CxrError:
        raise
    except Exception as exc:  # openpyxl's own errors on a malformed workbook: one line
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise CxrError(
            f"{file}: cannot read the workbook ({type(exc).__name__}: {first})"
        ) from None
    return found


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
