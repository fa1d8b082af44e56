"""The viewer's own widgets: the video with clickable faces, and the live track table."""
from __future__ import annotations

import math

import numpy as np
from PyQt6.QtCore import QPointF, QRectF, Qt, pyqtSignal
from PyQt6.QtGui import QColor, QImage, QPainter, QPen
from PyQt6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem, QWidget

from mobileface.identity.gallery import UNKNOWN
from mobileface.types import gender_label


class VideoView(QWidget):
    """The newest annotated frame, scaled to fit; a click on a face selects its track."""

    clicked = pyqtSignal(float, float)     # a point in frame pixels

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumSize(320, 180)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.image: QImage | None = None
        self.highlight: np.ndarray | None = None     # the selected face's box (frame pixels)
        self.placeholder = "No source: choose a camera, a file or a URL and press Start"

    def set_frame(self, image: QImage | None, highlight: np.ndarray | None = None) -> None:
        self.image = image
        self.highlight = highlight
        self.update()

    def set_highlight(self, box: np.ndarray | None) -> None:
        self.highlight = box
        self.update()

    def image_rect(self) -> QRectF:
        """Where the frame is drawn in the widget (aspect ratio kept, centred)."""
        if self.image is None or self.image.isNull():
            return QRectF()
        scale = min(self.width() / self.image.width(), self.height() / self.image.height())
        w, h = self.image.width() * scale, self.image.height() * scale
        return QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h)

    def to_frame(self, point: QPointF) -> tuple[float, float] | None:
        rect = self.image_rect()
        if rect.isEmpty() or not rect.contains(point):
            return None
        scale = self.image.width() / rect.width()
        return ((point.x() - rect.x()) * scale, (point.y() - rect.y()) * scale)

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(24, 24, 24))
        if self.image is None or self.image.isNull():
            painter.setPen(QColor(190, 190, 190))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.placeholder)
            return
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        rect = self.image_rect()
        painter.drawImage(rect, self.image)
        if self.highlight is not None:
            scale = rect.width() / self.image.width()
            x1, y1, x2, y2 = (float(v) for v in self.highlight)
            pen = QPen(QColor(255, 255, 255), 3, Qt.PenStyle.DashLine)
            painter.setPen(pen)
            painter.drawRect(QRectF(rect.x() + (x1 - 4) * scale, rect.y() + (y1 - 4) * scale,
                                    (x2 - x1 + 8) * scale, (y2 - y1 + 8) * scale))

    def mousePressEvent(self, event) -> None:
        point = self.to_frame(event.position())
        if point is not None and event.button() == Qt.MouseButton.LeftButton:
            self.clicked.emit(*point)


def face_at(boxes: np.ndarray, x: float, y: float) -> int | None:
    """The row of the smallest box containing (x, y), or None."""
    if boxes is None or not len(boxes):
        return None
    inside = (boxes[:, 0] <= x) & (x <= boxes[:, 2]) & (boxes[:, 1] <= y) & (y <= boxes[:, 3])
    if not inside.any():
        return None
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return int(np.flatnonzero(inside)[np.argmin(areas[inside])])


def _number(value, digits: int = 0, signed: bool = False) -> str:
    if value is None or not math.isfinite(float(value)):
        return ""
    return f"{float(value):{'+' if signed else ''}.{digits}f}"


class TrackTable(QTableWidget):
    """One row per face of the shown frame: its track's id, name and attributes."""

    COLUMNS = ("ID", "Name", "Similarity", "Age", "Gender", "Yaw", "Pitch", "Roll", "Quality")
    trackSelected = pyqtSignal(int)        # -1: none

    def __init__(self, parent=None):
        super().__init__(0, len(self.COLUMNS), parent)
        self.setHorizontalHeaderLabels(self.COLUMNS)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().setVisible(False)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.selected_track = -1
        self._updating = False
        self.itemSelectionChanged.connect(self._selection_changed)

    @staticmethod
    def rows_of(faces) -> list[dict]:
        """The table's content for a frame's faces (tracked faces only, by id)."""
        rows = []
        if faces is None or faces.track_id is None:
            return rows
        ages, genders = faces.age_and_gender()
        for i, tid in enumerate(faces.track_id):
            if tid <= 0:
                continue
            identity = str(faces.identity[i]) if faces.identity is not None else ""
            gender = ""
            if genders is not None:
                label, confidence = gender_label(genders[i])
                gender = f"{label[0].upper()} {confidence:.0%}" if label else ""
            pose = faces.pose[i] if faces.pose is not None else (math.nan,) * 3
            rows.append({
                "ID": str(int(tid)),
                "Name": identity,
                "Similarity": _number(faces.similarity[i], 3) if faces.similarity is not None
                else "",
                "Age": _number(ages[i]) if ages is not None else "",
                "Gender": gender,
                "Yaw": _number(pose[0], 0, True),
                "Pitch": _number(pose[1], 0, True),
                "Roll": _number(pose[2], 0, True),
                "Quality": _number(faces.quality[i], 2) if faces.quality is not None else "",
            })
        rows.sort(key=lambda r: int(r["ID"]))
        return rows

    def show_faces(self, faces) -> None:
        rows = self.rows_of(faces)
        self._updating = True
        try:
            self.setRowCount(len(rows))
            selected_row = -1
            for r, row in enumerate(rows):
                for c, column in enumerate(self.COLUMNS):
                    item = self.item(r, c)
                    if item is None:
                        item = QTableWidgetItem()
                        if c != 1:
                            item.setTextAlignment(Qt.AlignmentFlag.AlignRight
                                                  | Qt.AlignmentFlag.AlignVCenter)
                        self.setItem(r, c, item)
                    if item.text() != row[column]:
                        item.setText(row[column])
                name_item = self.item(r, 1)
                unknown = row["Name"] in ("", UNKNOWN)
                name_item.setForeground(QColor(120, 120, 120) if unknown else QColor(0, 110, 0))
                if int(row["ID"]) == self.selected_track:
                    selected_row = r
            if selected_row >= 0:
                self.selectRow(selected_row)
            else:
                self.clearSelection()
        finally:
            self._updating = False

    def select_track(self, track_id: int) -> None:
        self.selected_track = track_id
        for r in range(self.rowCount()):
            if self.item(r, 0) is not None and self.item(r, 0).text() == str(track_id):
                self._updating = True
                self.selectRow(r)
                self._updating = False
                return

    def row_texts(self) -> list[dict]:
        return [{c: self.item(r, i).text() for i, c in enumerate(self.COLUMNS)}
                for r in range(self.rowCount())]

    def _selection_changed(self) -> None:
        if self._updating:
            return
        rows = self.selectionModel().selectedRows()
        track = int(self.item(rows[0].row(), 0).text()) if rows else -1
        self.selected_track = track
        self.trackSelected.emit(track)
