"""A DataTable whose rows are keyed by entity id and updated in place.

`sync` is given the rows that may have changed; it updates only the cells that differ, adds
new rows, removes vanished or filtered-out ones, and re-sorts only when something moved, keeping
the cursor on the same id. Nothing is cleared and rebuilt on an update (no flicker, low CPU).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist

from tui.views import Column, row_text, sort_value

Cells = tuple[Any, ...]
BULK_REMOVALS = 20


def _width(cell: object) -> int:
    return cell.cell_len if isinstance(cell, Text) else len(str(cell))


class LiveTable(DataTable[Any]):
    def __init__(self, columns: list[Column], *, id: str, own_filter: bool = True) -> None:
        """`own_filter=False`: the rows given are filtered already (the Tasks view picks its
        page from the whole session); `filter_text` is kept here but not applied again."""
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.spec = columns
        self.own_filter = own_filter
        self.shown: dict[str, Cells] = {}
        self.filter_text = ""
        self.scope: Callable[[str], bool] | None = None  # a drill-down's restriction
        self.scope_label = ""
        self.sort_column: int | None = None
        self.sort_reverse = False

    def on_mount(self) -> None:
        for column in self.spec:
            self.add_column(column.label, key=column.key, width=column.width)

    def fits(self, key: str, cells: Cells) -> bool:
        if self.scope is not None and not self.scope(key):
            return False
        return not self.filter_text or not self.own_filter or self.filter_text in row_text(cells)

    def sync(self, rows: Iterable[tuple[str, Cells | None]]) -> None:
        """`rows`: (key, cells) for every row that may have changed; cells None = gone."""
        rows = list(rows)
        gone = sum(1 for key, cells in rows if key in self.shown and (cells is None or not self.fits(key, cells)))
        if gone > max(BULK_REMOVALS, len(self.shown) // 10):
            self._redraw(rows)
            return
        moved = False
        for key, cells in rows:
            old = self.shown.get(key)
            if cells is None or not self.fits(key, cells):
                if old is not None:
                    self.remove_row(key)
                    del self.shown[key]
                continue
            if old is None:
                self.add_row(*cells, key=key)
                self.shown[key] = cells
                moved = True
            elif old != cells:
                for index, (before, after) in enumerate(zip(old, cells, strict=True)):
                    if before != after:
                        # Widen a column only when a value outgrows it (not on every update).
                        grow = _width(after) > _width(before)
                        self.update_cell(key, self.spec[index].key, after, update_width=grow)
                        moved = moved or index == self.sort_column
                self.shown[key] = cells
        if moved and self.sort_column is not None:
            self.apply_sort()

    def _redraw(self, rows: list[tuple[str, Cells | None]]) -> None:
        """Many rows leave at once (DataTable.remove_row costs O(rows) each): clear and add the
        rest back in one go, keeping the cursor on the same id."""
        current = self.current_key()
        shown = dict(self.shown)
        for key, cells in rows:
            if cells is None or not self.fits(key, cells):
                shown.pop(key, None)
            else:
                shown[key] = cells
        self.clear()
        self.shown = shown
        for key, cells in shown.items():
            self.add_row(*cells, key=key)
        self.apply_sort()
        if current is not None:
            self.select_key(current)

    def rebuild(self, rows: Iterable[tuple[str, Cells]]) -> None:
        """After a filter, scope or snapshot change: keep what still fits, add the rest."""
        rows = list(rows)
        keys = {k for k, _ in rows}
        self.sync([(k, None) for k in list(self.shown) if k not in keys])
        self.sync(rows)
        self.apply_sort()

    def apply_sort(self) -> None:
        if self.sort_column is None or not self.row_count:
            return
        current = self.current_key()
        self.sort(self.spec[self.sort_column].key, key=sort_value, reverse=self.sort_reverse)
        if current is not None:
            self.select_key(current)

    def cycle_sort(self) -> str:
        """`s`: next column ascending, then descending, then the next column."""
        if self.sort_column is None:
            self.sort_column, self.sort_reverse = 0, False
        elif not self.sort_reverse:
            self.sort_reverse = True
        else:
            self.sort_column = (self.sort_column + 1) % len(self.spec)
            self.sort_reverse = False
        self.apply_sort()
        return f"{self.spec[self.sort_column].label} {'desc' if self.sort_reverse else 'asc'}"

    def current_key(self) -> str | None:
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:  # an empty or shrinking table has no cursor row
            return None
        return key

    def select_key(self, key: str) -> bool:
        try:
            self.move_cursor(row=self.get_row_index(key))
        except RowDoesNotExist:
            return False
        return True
