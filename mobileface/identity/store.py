"""What every facebank back end shares, and the one place that picks the back end.

``--facebank DIR`` is the folder of photos with its SQLite file
(:class:`~mobileface.identity.facebank.Facebank`); ``--facebank
postgresql://user@host:port/db`` is a PostgreSQL server with pgvector
(:class:`~mobileface.identity.postgres.PostgresFacebank`), which many machines
share. :func:`open_facebank` is how every app opens one. Both answer the same
calls (people, add, rename, remove, import, gallery, pairs, changed) with the
same rules, written once here: what a person and an import report are, the
enrolment a picture becomes, which pictures are flagged as likely mistakes,
and the command that re-embeds a facebank.
"""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from mobileface.vectors import normalise

#: the URL schemes of a PostgreSQL facebank
DATABASE_SCHEMES = ("postgresql://", "postgres://")


@dataclass
class Person:
    id: int
    name: str
    images: int
    outliers: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    best_quality: float = 0.0


@dataclass
class ImportReport:
    added: list[str] = field(default_factory=list)     # files newly embedded
    kept: int = 0                                      # files already up to date
    removed: list[str] = field(default_factory=list)   # rows whose file is gone
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    outliers: list[str] = field(default_factory=list)  # files flagged as likely mistakes
    people_removed: list[str] = field(default_factory=list)


class Enrolment(NamedTuple):
    """One picture to enrol: its file's bytes and name, its embedding and quality, and
    the aligned face as JPEG bytes (kept in the database; None when not made)."""

    data: bytes
    suffix: str
    stem: str
    embedding: np.ndarray
    quality: float
    chip: bytes | None = None


def enrolments(items) -> list[Enrolment]:
    """Enrolments from :class:`Enrolment` or plain (data, suffix, stem, embedding,
    quality[, chip]) tuples."""
    return [item if isinstance(item, Enrolment) else Enrolment(*item) for item in items]


def embedded(result) -> tuple[np.ndarray, float, bytes | None]:
    """What an import's ``embed`` gave for one picture: (embedding, quality) or
    (embedding, quality, aligned face JPEG)."""
    embedding, quality, *rest = result
    return np.asarray(embedding, np.float32), float(quality), (rest[0] if rest else None)


def outlier_mask(vectors: np.ndarray, threshold: float) -> np.ndarray:
    """Which of one person's pictures are likely mistakes: those whose most similar
    other picture stays below ``threshold`` (with two pictures that disagree, both:
    which one is wrong cannot be told). None of a single picture. The best match
    rather than the mean, so that one wrong picture does not drag the right ones down."""
    if len(vectors) < 2:
        return np.zeros(len(vectors), bool)
    unit = normalise(np.asarray(vectors, np.float32))
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    return sims.max(1) < threshold


def genuine_and_impostor(gallery) -> tuple[np.ndarray, np.ndarray]:
    """Same-person and different-person similarities of a gallery's pictures."""
    if len(gallery.embeddings) < 2:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    sims = gallery.embeddings @ gallery.embeddings.T
    upper = np.triu_indices(len(sims), 1)
    same = (gallery.owners[:, None] == gallery.owners[None, :])[upper]
    return sims[upper][same], sims[upper][~same]


def reembed_command(facebank, embedder: str | None) -> str:
    """The command that re-embeds ``facebank`` (a folder or a URL) with ``embedder``
    (the --embedder spec), quoted so that it works when pasted into a shell."""
    words = ["python", "-m", "mobileface", "facebank", "import", "--reembed",
             "--facebank", str(facebank)]
    if embedder:
        words += ["--embedder", str(embedder)]
    return shlex.join(words)


def describe_url(url: str) -> str:
    """The server a URL names, as messages show it: no password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(url)
    except Exception:
        return "the PostgreSQL URL given"
    user = f"{info['user']}@" if info.get("user") else ""
    host = info.get("host") or "localhost"
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql://{user}{host}{port}/{info.get('dbname', '')}"


def _embedder_of(model_id: str | None) -> str | None:
    """The --embedder spec of a model id of dlib's embedders (the ones known by name);
    None for another model, whose spec file only its user knows."""
    if not model_id:
        return None
    from mobileface.convert.dlib_resnet import MODEL_NAME
    from mobileface.stages.embed import DEFAULT_EMBEDDER, INT8_EMBEDDER

    if model_id.startswith(f"{MODEL_NAME}-int8:"):
        return INT8_EMBEDDER
    if model_id.startswith(f"{MODEL_NAME}:"):
        return DEFAULT_EMBEDDER
    return None


class FacebankRules:
    """What both back ends decide the same way, from what each provides: ``location``
    (how messages name it), ``spec`` (what --facebank names it), ``embedder`` (the user's --embedder), ``models()``,
    ``_gallery_rows(model_id, include_outliers)`` (image id, added, person id, name per
    row, in the order of the people) and ``_embeddings(image_ids)``."""

    def reembed_command(self, model_id: str | None = None) -> str:
        """The command that re-embeds this facebank, to paste as it is printed.

        It names this facebank and the embedder: the one the user gave
        (``embedder``), else dlib's when ``model_id`` is one of its models; for
        another model unknown here it asks for the spec (SPEC).
        """
        spec = self.embedder or _embedder_of(model_id)
        command = reembed_command(self.spec, spec or "SPEC")
        if spec is None:
            command += f" (SPEC: the spec .json of the embedder {model_id})"
        return command

    def _other_models(self, model_id: str):
        """The refusal of a facebank holding embeddings of other models (None: it does not)."""
        from mobileface.identity.errors import FacebankError

        others = [m for m in self.models() if m != model_id]
        if not others:
            return None
        return FacebankError(f"facebank {self.location} holds embeddings of "
                             f"{', '.join(others)}, not of {model_id}; re-embed it from its "
                             f"photos with: {self.reembed_command(model_id)}")

    def _check_model(self, model_id: str) -> None:
        refusal = self._other_models(model_id)
        if refusal:
            raise refusal

    def gallery(self, model_id: str, include_outliers: bool = True, previous=None):
        """Every enrolled embedding made by ``model_id``, ready to match.

        A facebank whose embeddings were made by another model cannot be
        compared with this one's: that is refused, naming how to re-embed.
        ``previous`` (this facebank's gallery of before) is reused for the rows
        that did not change, and only those that did are read: the change log
        names them (schema 3). Without a usable log (an older schema, a reader
        too far behind) every row's entry is read again, and still only the
        changed rows' embeddings.
        """
        from mobileface.identity.gallery import Gallery, GalleryRows

        meta = self._changed_rows(model_id, include_outliers, previous)
        if meta is None:
            self._check_model(model_id)
            seq = self._change_seq()          # before the rows: a later change is seen next
            rows = self._gallery_rows(model_id, include_outliers)
            # generators, not one C call over a million rows: a reload runs beside the
            # pipeline (identity.live), which must get the GIL back every few ms
            meta = GalleryRows(*(np.fromiter((r[c] for r in rows), dtype, len(rows))
                                 for c, dtype in ((0, np.int64), (1, np.float64),
                                                  (2, np.int64))),
                               [r[3] for r in rows])
        else:
            seq, meta = meta
        gallery = Gallery.assemble(meta, self._embeddings, model_id, previous)
        gallery.source = (self.location, include_outliers, seq)
        return gallery

    def _changed_rows(self, model_id: str, include_outliers: bool, previous):
        """(change log position, the rows now) from ``previous`` and the rows the log
        names since it was read; None when the whole gallery must be read."""
        from mobileface.identity.gallery import GalleryRows

        source = previous.source if previous is not None else None
        if (source is None or previous.model_id != model_id
                or source[:2] != (self.location, include_outliers) or source[2] is None):
            return None
        changes = self._changes_since(source[2], max(1_000, len(previous.image_ids) // 4))
        if changes is None:
            return None
        seq, image_ids, renamed = changes
        rows = self._image_rows(sorted(set(image_ids))) if image_ids else []
        if any(r[4] != model_id for r in rows):
            return None                      # another model's rows: the full read checks
        rows = [r for r in rows if include_outliers or not r[5]]
        owners = previous.person_ids[previous.owners]
        names = np.asarray(previous.names, object)[previous.owners]
        if renamed:
            for person, name in self._person_names(sorted(set(renamed))):
                names[owners == person] = name
        keep = ~np.isin(previous.image_ids, np.asarray(image_ids, np.int64))
        columns = [np.concatenate([previous.image_ids[keep],
                                   np.array([r[0] for r in rows], np.int64)]),
                   np.concatenate([previous.versions[keep],
                                   np.array([r[1] for r in rows], np.float64)]),
                   np.concatenate([owners[keep], np.array([r[2] for r in rows], np.int64)]),
                   np.concatenate([names[keep], np.array([r[3] for r in rows], object)])]
        order = _grouped(columns[2], int(keep.sum()))
        if order is not None:
            columns = [c[order] for c in columns]
        return seq, GalleryRows(*columns[:3], columns[3].tolist())

    def pairs(self, model_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Genuine (same person) and impostor (different people) similarities."""
        return genuine_and_impostor(self.gallery(model_id, include_outliers=False))


def _grouped(people: np.ndarray, kept: int):
    """The order that puts each row read again (``people[kept:]``) beside its person's
    kept rows (``people[:kept]``, grouped by person), new people's rows at the end; None
    when they are there already. A gallery's rows must be grouped by person, and sorting
    a million rows afresh costs a second where this costs a tenth."""
    if kept == len(people):
        return None
    held, fresh = people[:kept], people[kept:]
    keys = np.arange(len(people), dtype=np.float64)
    if kept:
        found, first_from_end = np.unique(held[::-1], return_index=True)
        at = np.searchsorted(found, fresh).clip(0, len(found) - 1)
        known = found[at] == fresh
        keys[kept:][known] = kept - 1 - first_from_end[at[known]] + 0.5
    newcomers = np.flatnonzero(keys[kept:] >= kept)
    if len(newcomers):                # a new person's rows together, in order of arrival
        first_seen = {}
        for i in newcomers:
            first_seen.setdefault(int(fresh[i]), kept + i)
        keys[kept + newcomers] = [first_seen[int(fresh[i])] for i in newcomers]
    return np.argsort(keys, kind="stable")


def is_database_url(spec) -> bool:
    return isinstance(spec, str) and spec.lower().startswith(DATABASE_SCHEMES)


def open_facebank(spec: str | os.PathLike, outlier_threshold: float | None = None,
                  read_only: bool | None = None, embedder: str | None = None):
    """The facebank ``spec`` names: a folder, or a ``postgresql://`` URL.

    The arguments mean the same on both back ends (see
    :class:`~mobileface.identity.facebank.Facebank`); a server that cannot be
    reached, or refuses the credentials, is a one-line FacebankError naming it.
    """
    if is_database_url(spec):
        from mobileface.identity.postgres import PostgresFacebank

        return PostgresFacebank(str(spec), outlier_threshold=outlier_threshold,
                                read_only=read_only, embedder=embedder)
    from mobileface.identity.facebank import Facebank

    return Facebank(spec, outlier_threshold=outlier_threshold, read_only=read_only,
                    embedder=embedder)
