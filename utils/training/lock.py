"""One training run per save folder.

:class:`SaveFolderLock` holds ``<save_folder>/train.lock`` for the whole run:
an exclusive POSIX record lock (``fcntl.lockf``) on the file, which records
the holder (pid, host, start time, command line, torchrun's run id). A
second run into the same folder finds the file locked and refuses at once
with one line naming the holder (:class:`FolderInUse`). The kernel drops the
lock when its process dies, however it dies (kill -9 included), and forked
children (DataLoader workers that outlive it for a moment) do not inherit
it, so a lock left by a dead process is taken over at once, with a warning
naming it; that is also how the group that torchrun restarts after a
failure (``--max_restarts``) takes over the lock of its own previous rank 0.
Under torchrun only rank 0 holds it. A POSIX lock belongs to a process, so
a second lock of the same folder in the same process is refused through
:data:`_HELD` (and the file is never opened a second time, which would drop
the lock).
"""
import fcntl
import json
import os
import socket
import sys
import time
import warnings

LOCK_NAME = 'train.lock'
_HELD = {}      # real path of a lock file -> (pid, fd) of the SaveFolderLock holding it


class FolderInUse(OSError):
    """Another run holds the save folder (one-line message naming it)."""


def _describe(info):
    if not info:
        return 'another process'
    since = info.get('started')
    when = time.strftime(' since %Y-%m-%d %H:%M:%S', time.localtime(since)) if since else ''
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')}{when}"


class SaveFolderLock:
    """``with SaveFolderLock(folder):`` or :meth:`acquire` / :meth:`release`.

    :meth:`acquire` raises :class:`FolderInUse` when a live process holds the
    folder; it warns when it takes over a lock file whose holder ended
    without releasing it. ``previous`` is that holder's record (or None)."""

    def __init__(self, folder):
        self.folder = os.fspath(folder)
        self.path = os.path.join(self.folder, LOCK_NAME)
        self.fd = None
        self.previous = None

    def _refuse(self, info):
        return FolderInUse(
            f'{self.folder} is in use by another training run ({_describe(info)}'
            f'{", " + info["command"] if info and info.get("command") else ""}): '
            'wait for it to end or choose another --save_folder')

    def acquire(self):
        try:
            os.makedirs(self.folder, exist_ok=True)
        except OSError as e:
            raise OSError(f'{self.folder}: cannot create the save folder '
                          f'({(e.strerror or str(e)).lower()})') from None
        key = os.path.realpath(self.path)
        held = _HELD.get(key)
        if held and held[0] == os.getpid():           # this process holds it
            raise self._refuse(_read(held[1]))
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                info = _read(fd)
                os.close(fd)
                raise self._refuse(info) from None
            try:                      # the file we locked is still the one at path
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)              # released and removed meanwhile: try again
        self.previous = _read(fd)
        if self.previous:
            warnings.warn(f'{self.folder}: taking over the lock of a run that ended without '
                          f'releasing it ({_describe(self.previous)})', RuntimeWarning,
                          stacklevel=2)
        record = {'pid': os.getpid(), 'host': socket.gethostname(), 'started': time.time(),
                  'command': ' '.join(os.path.basename(a) if i == 0 else a
                                      for i, a in enumerate(sys.argv))[:300],
                  'run_id': os.environ.get('TORCHELASTIC_RUN_ID'),
                  'restart': os.environ.get('TORCHELASTIC_RESTART_COUNT')}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + '\n').encode(), 0)
        os.fsync(fd)
        self.fd = fd
        _HELD[key] = (os.getpid(), fd)
        return self

    def release(self):
        """Remove the lock file and drop the lock (idempotent)."""
        if self.fd is None:
            return
        _HELD.pop(os.path.realpath(self.path), None)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


def _read(fd):
    """The record in the lock file (a dict), or None when it is empty or
    unreadable."""
    try:
        size = os.fstat(fd).st_size
        text = os.pread(fd, min(size, 65536), 0).decode('utf-8', 'replace').strip()
        return json.loads(text) if text else None
    except (OSError, ValueError):
        return {'pid': '?', 'host': '?'} if size else None
