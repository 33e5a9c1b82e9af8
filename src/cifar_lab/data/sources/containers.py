"""Containers: the same listing/reading interface over a folder, a tar and a zip.

Archive members are read straight into memory: nothing is extracted, nothing is written next
to the data. A truncated or corrupt archive is one ``DataError``, never a smaller dataset.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

from cifar_lab.errors import DataError, one_line

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ZIP_SUFFIXES = (".zip",)


def archive_kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    if name.endswith(ZIP_SUFFIXES):
        return "zip"
    return None


class Container:
    """Lists and reads the files of a source; names are '/'-separated member names."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        pass

    def listing(self) -> tuple[list[str], list[str]]:
        """(file names, directory names), hidden ones included (the layout filters them)."""
        raise NotImplementedError

    def read(self, names: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        """Yield (name, bytes) for ``names``, in whatever order is fastest for the container."""
        raise NotImplementedError

    def _corrupt(self, exc: BaseException) -> DataError:
        return DataError(
            f"could not read archive '{self.path}' ({self._reason(exc)}); it is truncated or "
            f"corrupt: download or create it again"
        )

    def _reason(self, exc: BaseException) -> str:
        return one_line(exc)


class FolderContainer(Container):
    def listing(self) -> tuple[list[str], list[str]]:
        files, dirs = [], []
        for dirpath, dirnames, filenames in os.walk(self.path):
            rel = PurePosixPath(Path(dirpath).relative_to(self.path).as_posix())
            dirs.extend(str(rel / d) for d in dirnames)
            files.extend(str(rel / f) for f in filenames)
        return files, dirs

    def read(self, names: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        for name in names:
            try:
                data = (self.path / name).read_bytes()
            except OSError as exc:
                raise DataError(f"could not read '{self.path / name}' ({one_line(exc)})") from exc
            yield name, data


class TarContainer(Container):
    _ERRORS = (tarfile.TarError, EOFError, OSError, ValueError)  # gzip/bz2/lzma/zlib errors too

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            self.tar = tarfile.open(path, "r:*")
        except self._ERRORS as exc:
            raise self._corrupt(exc) from exc

    def close(self) -> None:
        self.tar.close()

    def _reason(self, exc: BaseException) -> str:
        # tarfile.open(mode="r:*") lists each of its four failed attempts (gz, bz2, xz, plain)
        if isinstance(exc, tarfile.ReadError) and str(exc).startswith("file could not be opened"):
            return "not a tar file, plain or compressed with gzip, bz2 or xz"
        return super()._reason(exc)

    def listing(self) -> tuple[list[str], list[str]]:
        try:
            members = self.tar.getmembers()  # one pass over the (compressed) stream
            self._check_end_marker()
        except self._ERRORS as exc:
            raise self._corrupt(exc) from exc
        files = [m.name for m in members if m.isfile()]
        dirs = [m.name for m in members if m.isdir()]
        return files, dirs

    def _check_end_marker(self) -> None:
        """tarfile silently stops at a cut: only the zero end-of-archive block proves the end.

        Without this check, a plain .tar cut between two members would load as a smaller
        dataset (or fail with a misleading layout error).
        """
        self.tar.fileobj.seek(self.tar.offset)  # where getmembers() stopped
        if self.tar.fileobj.read(tarfile.BLOCKSIZE) != tarfile.NUL * tarfile.BLOCKSIZE:
            raise tarfile.ReadError("the archive ends before its end-of-archive marker")

    def read(self, names: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        wanted = set(names)
        # In archive order: a compressed tar is only fast to read front to back.
        for member in self.tar.getmembers():
            if member.name in wanted:
                try:
                    data = self.tar.extractfile(member).read()
                except self._ERRORS as exc:
                    raise self._corrupt(exc) from exc
                yield member.name, data


class ZipContainer(Container):
    _ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, RuntimeError, ValueError)

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            self.zip = zipfile.ZipFile(path)
        except self._ERRORS as exc:
            raise self._corrupt(exc) from exc

    def close(self) -> None:
        self.zip.close()

    def listing(self) -> tuple[list[str], list[str]]:
        infos = self.zip.infolist()
        return [i.filename for i in infos if not i.is_dir()], [i.filename for i in infos if i.is_dir()]

    def read(self, names: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        for name in names:
            try:
                data = self.zip.read(name)  # checks the member's CRC
            except self._ERRORS as exc:
                raise self._corrupt(exc) from exc
            yield name, data


def open_container(path: Path) -> Container:
    if path.is_dir():
        return FolderContainer(path)
    return TarContainer(path) if archive_kind(path) == "tar" else ZipContainer(path)
