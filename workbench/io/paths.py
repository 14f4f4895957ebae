"""Path containment: the one rule for every file read or written through a case, a sweep or a volume header.

A file named *inside* a folder (a path in ``case.json``, the ``ElementDataFile`` of a MetaIO
header, the ``data file`` of a NRRD header, a file below a case's attachment folder) must stay
in that folder:

- the name is relative, '/'-separated, without ``..``, ``\\``, a drive letter or a NUL byte;
- no component below the folder is a symbolic link (links are **refused**, not resolved: a
  link inside a bundle does not survive copying or zipping the same way everywhere, and a
  link that points inside today can be re-pointed outside tomorrow, between the check and the
  read); the folder itself may be reached through links, it is resolved first;
- the file is a regular file (or a real folder where a folder is allowed): a FIFO, a device
  or a socket is refused before it is opened, since reading one can block for ever;
- a detached data file named by a header sits *beside* its header: a bare file name
  (what PLUS, ITK and Slicer write), never a path.

Files a user names directly (``workbench info PATH``, ``--mri PATH``) may be links (the user
chose them) but must be regular files: :func:`require_regular_file`.

Every function takes the exception class to raise (``error``), so each reader keeps its own
error type (:class:`~workbench.errors.CaseBundleError`, ``SequenceFileError``,
``VolumeError``...) and a one-line message naming the file and the problem.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path, PurePosixPath, PureWindowsPath

from workbench.errors import WorkbenchError

__all__ = [
    "HEADER_SUFFIXES",
    "contained",
    "data_file_beside",
    "detached_data_file",
    "refuse_special_file",
    "regular_files_below",
    "require_regular_file",
]

#: File endings whose header may name a detached data file (MetaIO and NRRD).
HEADER_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")

_HEADER_CHUNK_BYTES = 1 << 16
#: Longest header searched for its data-file field (a PLUS sweep of many frames has a header of
#: a few MB); a longer "header" is not one, and the reader reports it.
_MAX_HEADER_BYTES = 64 << 20

_METAIO_DATA_RE = re.compile(rb"(?mi)^[ \t]*ElementDataFile[ \t]*=[ \t]*([^\r\n]*?)[ \t]*\r?$")
_METAIO_END_RE = re.compile(rb"(?mi)^[ \t]*ElementDataFile[ \t]*=[^\n]*\n")
_NRRD_DATA_RE = re.compile(rb"(?mi)^[ \t]*data[ \t]?file[ \t]*:(?!=)[ \t]*([^\r\n]*?)[ \t]*\r?$")
_NRRD_END_RE = re.compile(rb"\r?\n\r?\n")


def _kind_of(mode: int) -> str:
    """What a non-regular file is, in words."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file"


def require_regular_file(
    path: str | os.PathLike, error: type[WorkbenchError] = WorkbenchError, what: str = "file"
) -> Path:
    """``path`` as a Path if it is a regular file (links followed); raise ``error`` otherwise.

    Checked with ``stat`` before anything opens the file, so a FIFO or a device is refused
    instead of blocking the reader.

    Raises
    ------
    error
        ``"<what> not found"``, ``"is a folder, not a <what>"`` or ``"is a FIFO (named pipe),
        not a regular file; refused"`` (device, socket likewise), naming ``path``.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise error(f"{what} not found", path) from None
    except OSError as exc:
        raise error(f"cannot access the {what} ({exc.strerror or exc})", path) from None
    if stat.S_ISDIR(mode):
        raise error(f"is a folder, not a {what}", path)
    if not stat.S_ISREG(mode):
        raise error(f"is {_kind_of(mode)}, not a regular file; refused (reading it could block)", path)
    return path


def refuse_special_file(path: str | os.PathLike, error: type[WorkbenchError] = WorkbenchError) -> Path:
    """``path``; raise ``error`` if it is a FIFO, a device or a socket (links followed).

    A missing path, a folder or a regular file pass: the reader reports those in its own words.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return path
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise error(f"is {_kind_of(mode)}, not a regular file; refused (reading it could block)", path)
    return path


def _lexical_parts(relative: str, label: str, error: type[WorkbenchError], error_path) -> tuple[str, ...]:
    """The components of a '/'-separated relative path; raise ``error`` on anything that could escape."""
    if not isinstance(relative, str) or not relative:
        raise error(f"{label} is empty", error_path)
    if "\x00" in relative:
        raise error(f"{label} contains a NUL byte", error_path)
    if "\\" in relative:
        raise error(f"{label} contains '\\'; paths use '/'", error_path)
    posix = PurePosixPath(relative)
    if posix.is_absolute() or PureWindowsPath(relative).drive:
        raise error(f"{label} is absolute; it must be relative to its folder", error_path)
    if ".." in posix.parts:
        raise error(f"{label} contains '..'; files must stay inside their folder", error_path)
    parts = tuple(part for part in posix.parts if part != ".")
    if not parts:
        raise error(f"{label} names the folder itself, not a file in it", error_path)
    return parts


def contained(
    folder: str | os.PathLike,
    relative: str,
    *,
    error: type[WorkbenchError] = WorkbenchError,
    label: str | None = None,
    error_path: str | os.PathLike | None = None,
    allow_folder: bool = False,
    must_exist: bool = True,
) -> Path:
    """The file ``relative`` names inside ``folder``, refusing every way out.

    Parameters
    ----------
    folder : path
        The folder the file must stay in (resolved first: it may itself be reached through
        symbolic links).
    relative : str
        '/'-separated path relative to ``folder``.
    error : WorkbenchError subclass
        Raised on refusal.
    label : str, optional
        How the message names the reference (e.g. ``"mri.path 'mri/t2.nrrd'"``); default
        ``repr(relative)``.
    error_path : path, optional
        The file the error names (the document holding the reference); default the target.
    allow_folder : bool
        Accept a real folder as the target (its content is checked by
        :func:`regular_files_below`).
    must_exist : bool
        False for a file about to be written: missing components are fine, but each existing
        one must be a real folder (never a link) and an existing target a regular file.

    Returns
    -------
    pathlib.Path
        ``resolve(folder) / relative``; every component below ``folder`` is a real folder and
        the target a regular file (or folder, if allowed), none of them a symbolic link.

    Raises
    ------
    error
        The path is empty, absolute, holds ``..``, ``\\`` or NUL; a component is a symbolic
        link or not a folder; the target is missing (``must_exist``), a FIFO, device or
        socket, or a folder where a file is expected.
    """
    label = label or repr(relative)
    parts = _lexical_parts(relative, label, error, error_path)
    root = Path(folder).resolve()
    current = root
    for index, part in enumerate(parts):
        current = current / part
        last = index == len(parts) - 1
        # the label names the whole reference; name the component only where it is a parent folder
        what = f"{label}: {'/'.join(parts[: index + 1])}" if not last else label
        where = error_path if error_path is not None else current
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            if must_exist:
                raise error(f"{what} not found in {root}", where) from None
            return root.joinpath(*parts)
        except OSError as exc:
            raise error(f"{what}: cannot access it ({exc.strerror or exc})", where) from None
        if stat.S_ISLNK(mode):
            raise error(f"{what} is a symbolic link; links are refused, files must be real files inside their folder", where)
        if not last:
            if not stat.S_ISDIR(mode):
                raise error(f"{what} is not a folder", where)
        elif stat.S_ISDIR(mode):
            if not allow_folder:
                raise error(f"{what} is a folder, not a file", where)
        elif not stat.S_ISREG(mode):
            raise error(f"{what} is {_kind_of(mode)}, not a regular file; refused", where)
    return current


def regular_files_below(
    folder: str | os.PathLike,
    *,
    error: type[WorkbenchError] = WorkbenchError,
    label: str | None = None,
    error_path: str | os.PathLike | None = None,
) -> list[Path]:
    """Every regular file below ``folder`` (sorted), refusing links and FIFOs, devices, sockets.

    Nothing is followed: a symbolic link anywhere below ``folder`` (to a file or a folder,
    pointing inside or out) is refused, so a folder's digest covers only bytes that are in it.

    Raises
    ------
    error
        Naming the first link or non-regular entry (relative to ``folder``).
    """
    root = Path(folder)
    label = label or str(root)
    files: list[Path] = []
    pending = [root]
    while pending:
        current = pending.pop()
        try:
            entries = list(os.scandir(current))
        except OSError as exc:
            raise error(f"{label}: cannot list {current} ({exc.strerror or exc})", error_path or current) from None
        for entry in entries:
            path = Path(entry.path)
            shown = path.relative_to(root).as_posix()
            where = error_path if error_path is not None else path
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISLNK(mode):
                raise error(f"{label}: {shown} is a symbolic link; links are refused, a folder must hold real files only", where)
            if stat.S_ISDIR(mode):
                pending.append(path)
            elif stat.S_ISREG(mode):
                files.append(path)
            else:
                raise error(f"{label}: {shown} is {_kind_of(mode)}, not a regular file; refused", where)
    return sorted(files)


def data_file_beside(
    header: str | os.PathLike,
    reference: str,
    *,
    error: type[WorkbenchError] = WorkbenchError,
    field: str = "data file",
    must_exist: bool = True,
) -> Path:
    """The detached data file a header names, checked to be a regular file beside the header.

    MetaIO (``ElementDataFile``) and NRRD (``data file``) allow any path, absolute or
    relative to the header's folder; PLUS, ITK and Slicer write a bare file name beside the
    header, and that is all workbench accepts: a reference with a folder part (``/``,
    ``\\``, ``..``), absolute or not, is refused before anything is read.

    ``must_exist=False`` leaves a missing data file for the reader to report in its own words.

    Raises
    ------
    error
        Naming ``header``: the reference is not a bare file name, or the file is missing, a
        link, or not a regular file.
    """
    header = Path(header)
    label = f"{field} = {reference!r}"
    if not reference or "/" in reference or "\\" in reference or reference in (".", "..") or "\x00" in reference:
        raise error(
            f"{label} points outside the header's folder; a detached data file must sit beside its header "
            "(a bare file name)",
            header,
        )
    return contained(header.parent, reference, error=error, label=label, error_path=header, must_exist=must_exist)


def _read_header_prefix(path: Path, end: re.Pattern[bytes]) -> bytes:
    """The text header at the start of ``path``: up to the first ``end`` match, else up to EOF,
    a NUL byte (binary data) or the size cap, whichever comes first.

    Each chunk is searched from the start of the last line read before it, so a long header
    (a PLUS sweep of many frames) is scanned once, not once per chunk.
    """
    buffer = bytearray()
    with open(path, "rb") as fh:
        while len(buffer) < _MAX_HEADER_BYTES:
            chunk = fh.read(_HEADER_CHUNK_BYTES)
            start = buffer.rfind(b"\n") + 1  # the end pattern starts a line (MetaIO) or spans a line break (NRRD)
            start = max(0, start - 2)
            buffer += chunk
            match = end.search(buffer, start)
            if match is not None:
                return bytes(buffer[: match.end()])
            nul = chunk.find(b"\x00")
            if nul >= 0:
                return bytes(buffer[: len(buffer) - len(chunk) + nul])
            if not chunk:
                break
    return bytes(buffer)


def detached_data_file(header: str | os.PathLike, error: type[WorkbenchError] = WorkbenchError) -> Path | None:
    """The detached data file a MetaIO or NRRD header names, checked; None when the data are attached.

    Reads only the header: for MetaIO (``.mha``, ``.mhd``) up to the ``ElementDataFile`` line,
    for NRRD (``.nrrd``, ``.nhdr``) up to the blank line that ends the header. Other files
    (NIfTI, XML, ...) return None. ``LOCAL`` (MetaIO) and a NRRD header without ``data file``
    mean attached data. Lists (``LIST``) and file-name patterns (``%``) are refused.

    Raises
    ------
    error
        Naming ``header``: the header is not a regular file, or its data-file reference is a
        list, a pattern, or not a regular file beside the header (:func:`data_file_beside`).
    """
    header = Path(header)
    name = header.name.lower()
    if not name.endswith(HEADER_SUFFIXES):
        return None
    require_regular_file(header, error)
    if name.endswith((".mha", ".mhd")):
        head = _read_header_prefix(header, _METAIO_END_RE)
        matches = _METAIO_DATA_RE.findall(head)[:1]  # MetaIO reads up to the first one
        field, attached = "ElementDataFile", ("LOCAL",)
    else:
        head = _read_header_prefix(header, _NRRD_END_RE)
        if not head.startswith(b"NRRD"):
            return None
        matches = _NRRD_DATA_RE.findall(head)
        field, attached = "data file", ()
    references = [match.decode("utf-8", errors="replace") for match in matches]
    references = [ref for ref in references if ref not in attached]
    if not references:
        return None
    if len(references) > 1:
        raise error(f"{field} is given {len(references)} times; refused", header)
    reference = references[0]
    if not reference:
        raise error(f"{field} is empty: expected a file name beside the header", header)
    tokens = reference.split()
    # MetaIO: "LIST" or a "%" pattern name many files; NRRD: also "<pattern> <min> <max> <step>"
    if tokens[0].upper() == "LIST" or "%" in reference or (field == "data file" and len(tokens) > 1):
        raise error(f"{field} = {reference[:60]!r}: lists and file patterns are refused, only one file beside the header", header)
    return data_file_beside(header, reference, error=error, field=field)
