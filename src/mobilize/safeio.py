"""Reading files from anywhere without hanging, exhausting memory or following them outside: the helpers every read
of a user's or a bundle's file goes through.

- **Special files** (FIFOs, character/block devices, sockets) are refused from ``os.stat`` alone, before anything
  opens them: opening a FIFO for reading blocks until a writer appears, a device can stream forever.
- **Bounded reads**: :func:`read_bytes` refuses files above a limit before reading them (and reads at most the limit
  even if the file grows meanwhile).
- **Structured text** (:func:`load_json`, :func:`load_toml`): nesting depth, NaN/Infinity and numbers too large to be
  meaningful are one-line errors, never a ``RecursionError`` or an ``OverflowError`` deep inside the program.
- **Compressed archives** (:func:`check_npz`): every ``.npz`` member's declared size and array header are checked
  against a budget before anything is decompressed.
- **Output targets** (:func:`check_output_file`, :func:`check_output_dir`): ``--json``, ``--junit``, ``--summary``,
  ``--report-dir`` are checked before any work, so an unwritable target cannot fail a run after the bundle changed.

Every error is a :class:`~mobilize.errors.MobilizeInputError` (CLI exit 2) whose message names the file and the fix.
"""

from __future__ import annotations

import math
import os
import stat
import zipfile
from pathlib import Path
from typing import Any

from mobilize.errors import MobilizeInputError, one_line

KB, MB, GB = 1 << 10, 1 << 20, 1 << 30
#: structured text mobilize reads (manifest.json, baselines, configs, Manifest.json of a package)
JSON_LIMIT = 64 * MB
TOML_LIMIT = 4 * MB
#: deeper nesting than this is refused (mobilize's own documents nest fewer than 12 levels)
MAX_DEPTH = 64
#: integers with more digits than this are refused (no size, count or hash in mobilize needs more)
MAX_INT_DIGITS = 30
#: uncompressed bytes an .npz may expand to (reference.npz, calibration archives)
NPZ_LIMIT = 4 * GB
NPZ_MAX_MEMBERS = 10_000

_SPECIAL = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
            stat.S_IFSOCK: "a socket"}


def special_kind(mode: int) -> str | None:
    """"a FIFO (named pipe)", "a character device", … for a special file's ``st_mode``; None for files and folders."""
    return _SPECIAL.get(stat.S_IFMT(mode))


def refuse_nul(path: Any, what: str = "") -> None:
    """Raise :class:`MobilizeInputError` when ``path`` (text, bytes or path-like; anything else is not checked here)
    holds a NUL byte: no file system allows one, and ``os.stat`` would raise a bare ``ValueError`` mid-run."""
    try:
        text = os.fsdecode(path)
    except TypeError:
        return
    if "\0" in text:
        raise MobilizeInputError(f"{_label(printable(repr(text)), what)}: holds a NUL byte (\\0), which no file name "
                                 "can; give the real path")


def refuse_special(path: str | os.PathLike[str], what: str = "") -> os.stat_result | None:
    """Raise :class:`MobilizeInputError` when ``path`` is a FIFO, device or socket (decided from ``os.stat``, without
    opening it) or holds a NUL byte; returns the stat result, or None when nothing is there."""
    refuse_nul(path, what)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise MobilizeInputError(f"{_label(path, what)}: cannot read ({exc.strerror or exc})") from None
    kind = special_kind(st.st_mode)
    if kind:
        raise MobilizeInputError(f"{_label(path, what)}: is {kind}, not a regular file; mobilize only reads regular "
                                 "files (give the path of a real file)")
    return st


def regular_file(path: str | os.PathLike[str], what: str = "") -> os.stat_result:
    """``os.stat`` of an existing regular file; a one-line error for anything else (missing, folder, special)."""
    st = refuse_special(path, what)
    if st is None:
        raise MobilizeInputError(f"{_label(path, what)}: no such file")
    if stat.S_ISDIR(st.st_mode):
        raise MobilizeInputError(f"{_label(path, what)}: is a folder, not a file")
    return st


def read_bytes(path: str | os.PathLike[str], what: str = "", *, limit: int) -> bytes:
    """The content of a regular file of at most ``limit`` bytes (special files refused before opening them)."""
    regular_file(path, what)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise MobilizeInputError(f"{_label(path, what)}: cannot read ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())  # the file may have been swapped since the stat above
        if not stat.S_ISREG(st.st_mode):
            raise MobilizeInputError(f"{_label(path, what)}: is {special_kind(st.st_mode) or 'not a regular file'}; "
                                     "mobilize only reads regular files")
        if st.st_size > limit:
            raise MobilizeInputError(f"{_label(path, what)}: {st.st_size} bytes, more than the {_size(limit)} "
                                     "mobilize reads for such a file; is it the right file?")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise MobilizeInputError(f"{_label(path, what)}: grew past {_size(limit)} while being read")
    return data


def check_tree(root: str | os.PathLike[str], what: str = "", *, allow_symlinks: bool = False,
               max_entries: int = 100_000) -> list[Path]:
    """Every regular file under the folder ``root`` (sorted), refusing special files, symlinks (unless
    ``allow_symlinks``) and trees of more than ``max_entries`` entries; nothing is opened."""
    root = Path(root)
    files: list[Path] = []
    count = 0
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            raise MobilizeInputError(f"{_label(folder, what)}: cannot list ({exc.strerror or exc})") from None
        for e in entries:
            count += 1
            if count > max_entries:
                raise MobilizeInputError(f"{_label(root, what)}: more than {max_entries} entries; is it the right "
                                         "folder?")
            p = Path(e.path)
            if e.is_symlink():
                if not allow_symlinks:
                    raise MobilizeInputError(f"{_label(p, what)}: is a symlink; mobilize does not follow links "
                                             "inside a package, to files outside the bundle or not (copy the file "
                                             "in instead)")
                refuse_special(p, what)
                continue
            mode = e.stat(follow_symlinks=False).st_mode
            kind = special_kind(mode)
            if kind:
                raise MobilizeInputError(f"{_label(p, what)}: is {kind}, not a regular file; mobilize only reads "
                                         "regular files")
            if stat.S_ISDIR(mode):
                stack.append(p)
            else:
                files.append(p)
    return sorted(files)


# --- structured text ---------------------------------------------------------------------------------------------


class _Refused(ValueError):
    pass


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {one_line(text, 40)} is not finite (too large, infinite or NaN)")
    return value


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"an integer of {len(text.lstrip('-'))} digits is too large (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_constant(text: str) -> Any:
    raise _Refused(f"{text} is not a JSON number (use null or a finite number)")


def load_json(data: bytes | str, where: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON text from an untrusted file: a one-line :class:`MobilizeInputError` (naming ``where``) for invalid
    JSON, nesting deeper than ``max_depth``, NaN/Infinity, and numbers too large to mean anything."""
    import json

    try:
        doc = json.loads(data, parse_float=_parse_float, parse_int=_parse_int, parse_constant=_parse_constant)
    except _Refused as exc:
        raise MobilizeInputError(f"{where}: {exc}; the file is not one mobilize wrote (or was edited)") from None
    except RecursionError:
        raise MobilizeInputError(f"{where}: nested too deeply to be a file mobilize reads") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MobilizeInputError(f"{where}: not valid JSON ({one_line(exc, 160)})") from None
    _check_depth(doc, where, max_depth)
    return doc


def load_toml(text: str, where: str, *, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Parse TOML text with the same bounds as :func:`load_json` (nesting, NaN/Infinity pass through as floats and
    are judged by the reader of each key; integers are bounded)."""
    import tomllib

    try:
        doc = tomllib.loads(text, parse_float=_parse_float)
    except _Refused as exc:
        raise MobilizeInputError(f"{where}: {exc}; fix the value there") from None
    except RecursionError:
        raise MobilizeInputError(f"{where}: nested too deeply (more than {max_depth} levels); fix the syntax there") \
            from None
    except tomllib.TOMLDecodeError as exc:
        raise MobilizeInputError(f"{where}: not valid TOML: {one_line(exc, 200)}; fix the syntax there") from None
    except ValueError as exc:  # e.g. an integer beyond Python's digit limit
        raise MobilizeInputError(f"{where}: not valid TOML: {one_line(exc, 200)}; fix the value there") from None
    _check_depth(doc, where, max_depth)
    for value in _leaves(doc):
        if isinstance(value, int) and not isinstance(value, bool) and len(str(abs(value))) > MAX_INT_DIGITS:
            raise MobilizeInputError(f"{where}: an integer of {len(str(abs(value)))} digits is too large (at most "
                                     f"{MAX_INT_DIGITS}); fix the value there")
    return doc


def _check_depth(doc: Any, where: str, max_depth: int) -> None:
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > max_depth:
                raise MobilizeInputError(f"{where}: nested more than {max_depth} levels deep; not a file mobilize "
                                         "reads")
            stack.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node))


def _leaves(doc: Any) -> Any:
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        else:
            yield node


# --- archives ----------------------------------------------------------------------------------------------------


def check_zip_names(names: list[str], where: str) -> None:
    """Refuse archives whose entries repeat a name (compared without case, as torch's zip reader does) or escape
    the archive: two readers could pick different copies of a repeated entry."""
    seen: dict[str, str] = {}
    for name in names:
        key = name.lower()
        if key in seen:
            same = "twice" if seen[key] == name else f"twice (as {seen[key]!r} and {name!r})"
            raise MobilizeInputError(f"{where}: the archive holds the entry {name!r} {same}; a well-formed archive "
                                     "names each entry once, and readers disagree on which copy counts — refusing it")
        seen[key] = name
        if name.startswith("/") or "\\" in name or ".." in name.split("/") or "\0" in name:
            raise MobilizeInputError(f"{where}: archive entry {name!r} escapes the archive; refusing it")


def check_npz(path: str | os.PathLike[str], where: str, *, limit: int = NPZ_LIMIT) -> None:
    """Check an ``.npz`` before numpy decompresses anything: a regular file, a zip whose members are each named
    once, and whose ``.npy`` headers declare arrays whose sizes match the members' declared sizes and add up to at
    most ``limit`` bytes. (zipfile never inflates a member past its declared size, so this bounds memory.)"""
    import numpy as np

    regular_file(path, where)
    total = 0
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            if len(infos) > NPZ_MAX_MEMBERS:
                raise MobilizeInputError(f"{where}: {len(infos)} arrays, more than {NPZ_MAX_MEMBERS}")
            check_zip_names([i.filename for i in infos], where)
            for info in infos:
                total += info.file_size
                if total > limit:
                    raise MobilizeInputError(f"{where}: its arrays expand to more than {_size(limit)}; refusing to "
                                             "decompress it")
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version not in ((1, 0), (2, 0)):
                        raise MobilizeInputError(f"{where}: {info.filename} is .npy version {version}, which "
                                                 "mobilize does not read; save it with numpy.savez")
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                                   np.lib.format.read_array_header_2_0)
                    shape, _fortran, dtype = read_header(f)  # numpy bounds the header's size
                    header_end = f.tell()
                if dtype.hasobject:
                    raise MobilizeInputError(f"{where}: {info.filename} holds pickled objects (Python objects "
                                             "mobilize never unpickles); save plain numeric arrays")
                count = math.prod(shape) if shape else 1
                if count * dtype.itemsize != info.file_size - header_end:
                    raise MobilizeInputError(f"{where}: {info.filename} declares {list(shape)} {dtype} "
                                             f"({count * dtype.itemsize} bytes) but holds "
                                             f"{info.file_size - header_end}; the archive is corrupted")
    except MobilizeInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile and numpy raise many types on hostile archives
        raise MobilizeInputError(f"{where}: not a readable .npz archive ({type(exc).__name__}: {one_line(exc, 160)})") \
            from None


# --- output targets ----------------------------------------------------------------------------------------------


def check_output_file(path: str | os.PathLike[str] | None, flag: str) -> None:
    """Refuse an output file that cannot be written: a folder, a special file (writing to a FIFO blocks), a file
    without write permission, or a missing/unwritable parent folder. Checked before any work is done."""
    if path is None or str(path) == "-":
        return
    refuse_nul(path, flag)
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise MobilizeInputError(f"{flag} {p}: cannot use it ({exc.strerror or exc})") from None
    if st is not None:
        kind = special_kind(st.st_mode)
        if kind:
            raise MobilizeInputError(f"{flag} {p}: is {kind}; give the path of a regular file")
        if stat.S_ISDIR(st.st_mode):
            raise MobilizeInputError(f"{flag} {p}: is a folder; give a file path")
    parent = p.parent if str(p.parent) else Path(".")
    _writable_folder(parent, f"{flag} {p}", "parent folder ")
    if st is not None and not os.access(p, os.W_OK):
        raise MobilizeInputError(f"{flag} {p}: the file is not writable; choose another path")


def check_output_dir(path: str | os.PathLike[str] | None, flag: str) -> None:
    """Refuse an output folder that cannot be written (a file, a special file, no write permission, or a missing
    and uncreatable parent)."""
    if path is None:
        return
    p = Path(path)
    st = refuse_special(p, flag)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise MobilizeInputError(f"{flag} {p}: is a file; give a folder")
    if st is not None:
        _writable_folder(p, f"{flag} {p}", "")
        return
    ancestor = p.parent if str(p.parent) else Path(".")
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    _writable_folder(ancestor, f"{flag} {p}", "folder ")


def _writable_folder(folder: Path, where: str, what: str) -> None:
    if not folder.is_dir():
        raise MobilizeInputError(f"{where}: {what}{folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise MobilizeInputError(f"{where}: {what}{folder} is not writable; choose another path")
    try:  # access() says yes to root even on a read-only mount: try it for real
        import tempfile

        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise MobilizeInputError(f"{where}: cannot write into {what}{folder} ({exc.strerror or exc}); choose "
                                 "another path") from None


_UNSAFE = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)] if chr(c) not in "\n\t"}
_UNSAFE.update({c: f"\\u{c:04x}" for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]})


def printable(text: str) -> str:
    """``text`` with terminal control characters (ESC, BEL, C1 codes, bidi overrides) written out as escapes, so a
    hostile file name or message cannot drive the terminal it is printed on. Newlines and tabs are kept."""
    return str(text).translate(_UNSAFE)


def _label(path: str | os.PathLike[str], what: str) -> str:
    return f"{what} {path}" if what else str(path)


def _size(n: int) -> str:
    for unit, factor in (("GB", GB), ("MB", MB), ("KB", KB)):
        if n >= factor:
            return f"{n / factor:g} {unit}"
    return f"{n} bytes"
