"""The base class of every detection dataset, image reading and the checks
the loaders share with ``python -m data.check``.

Item contract (all datasets)::

    dataset[i]              -> (img FloatTensor [3, H, W], target np.float32 [n, 5])
    dataset.pull_item(i)    -> (img, target, height, width)
    dataset.pull_image(i)   -> BGR uint8 numpy image as stored
    dataset.pull_anno(i)    -> [img_id, [[x1, y1, x2, y2, label], ...]] pixels
    dataset.pull_tensor(i)  -> torch.Tensor [1, H, W, 3] of the BGR image as stored
    dataset.pull_gt(i)      -> dict(image_id, width, height, boxes, labels, difficult)

``target`` rows are ``(x1, y1, x2, y2, label)`` with coordinates normalised
to [0, 1] and the label 0-based without background. Training targets leave
out difficult (VOC) and crowd (COCO) objects unless ``keep_difficult``;
``pull_gt`` returns every object, with ``difficult`` flags, in 0-based
pixel coordinates of the original image (VOC's 1-based XML numbers minus
one, as ssd.pytorch's ``pull_anno``).
"""
import os
import re
import sys
import tempfile
import threading
import warnings

import cv2
import numpy as np
import torch
import torch.utils.data as data

__all__ = ['DatasetError', 'DatasetNotFound', 'DetectionDataset',
           'read_image', 'decode_image', 'check_image', 'safe_join',
           'clip_boxes', 'make_gt', 'IMAGE_EXTS', 'find_image']

IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp')


class DatasetError(ValueError):
    """A bad sample or annotation; the message is one line naming the file."""


class DatasetNotFound(DatasetError):
    """A split or annotation file that does not exist: the one error that a
    caller trying several default splits may pass over (an empty or broken
    split that exists is a plain DatasetError)."""


def safe_join(root, *parts):
    """Join ``parts`` under ``root``; refuse absolute paths and ``..``.

    Raises DatasetError when the result would leave ``root``."""
    for p in parts:
        p = str(p)
        if (os.path.isabs(p) or p.startswith(('/', '\\')) or '\x00' in p
                or '..' in p.replace('\\', '/').split('/')):
            raise DatasetError(f"{os.path.join(root, *map(str, parts))}: "
                               f"path leaves the dataset root {root}")
    return os.path.join(root, *map(str, parts))


def find_image(folder, stem):
    """``folder/stem`` with the first extension of IMAGE_EXTS that exists,
    else ``folder/stem.jpg`` (the file named when it is missing)."""
    for ext in IMAGE_EXTS:
        p = os.path.join(folder, stem + ext)
        if os.path.exists(p):
            return p
    return os.path.join(folder, stem + '.jpg')


def check_image(path, buf=None):
    """Return a problem string for an image file, or None when it looks
    complete: missing, empty, not an image, or truncated (JPEG without its
    end-of-image marker, PNG without IEND)."""
    try:
        if buf is None:
            with open(path, 'rb') as f:
                buf = f.read()
    except FileNotFoundError:
        return 'missing image'
    except OSError as e:
        return f'unreadable image ({e.strerror or e})'
    if not buf:
        return 'empty image file'
    tail = buf[-1024:].rstrip(b'\x00\r\n\t ')
    if buf[:2] == b'\xff\xd8' and not tail.endswith(b'\xff\xd9') \
            and b'\xff\xd9' not in tail[-64:]:
        return 'truncated JPEG (no end-of-image marker)'
    if buf[:8] == b'\x89PNG\r\n\x1a\n' and b'IEND' not in tail[-16:]:
        return 'truncated PNG (no IEND chunk)'
    return None


# The one decoding policy (loaders, data.check, test.py). libjpeg and libpng
# report damaged data as text on the process's stderr, without a file name,
# and still return an image. ``decode_image`` catches that text: a message
# about corrupt data ("Corrupt JPEG data: ...", "Premature end of JPEG
# file", "Invalid SOS ...", "Inconsistent progression ...", libpng errors)
# makes the image bad input (a DatasetError naming the file); any other
# decoder message becomes a Python warning naming the file. The cost is four
# system calls per image (fd 2 is pointed at a per-process scratch file
# around cv2.imdecode); threads of one process decode one at a time.
_CORRUPT = re.compile(r'corrupt|premature|invalid|inconsistent|bogus|'
                      r'libpng error|crc error', re.I)
_capture = {'pid': None, 'fd': None}
_capture_lock = threading.Lock()


def _after_fork():          # a forked child never inherits a held lock
    global _capture_lock
    _capture_lock = threading.Lock()


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_after_fork)


def _scratch_fd():
    """This process's scratch file for the decoder's stderr (a new one after
    a fork: DataLoader workers must not share one)."""
    if _capture['pid'] != os.getpid():
        fd, name = tempfile.mkstemp(prefix='decoder-stderr-')
        os.unlink(name)         # lives as long as the process holds fd
        _capture['fd'], _capture['pid'] = fd, os.getpid()
    return _capture['fd']


def _imdecode_capturing(buf):
    """cv2.imdecode(buf) -> (image or None, what the decoder wrote to fd 2
    meanwhile). Falls back to a plain decode where fd 2 cannot be moved."""
    with _capture_lock:
        try:
            fd = _scratch_fd()
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):
            return cv2.imdecode(buf, cv2.IMREAD_COLOR), ''
        try:
            os.dup2(fd, 2)
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        n = os.fstat(fd).st_size
        if not n:
            return img, ''
        text = os.pread(fd, n, 0).decode('utf-8', 'replace')
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        return img, text


def decode_image(buf, path):
    """Decode an encoded image (uint8 numpy buffer) to BGR uint8 under the
    decoding policy above; ``path`` is the file named in errors and
    warnings."""
    try:
        img, text = _imdecode_capturing(buf)
    except cv2.error as e:
        raise DatasetError(f'{path}: unreadable image ({str(e).strip()})') \
            from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    corrupt = [ln for ln in lines if _CORRUPT.search(ln)]
    if corrupt:
        raise DatasetError(f'{path}: corrupt image data (decoder: '
                           f'{corrupt[0]})')
    for ln in lines:
        warnings.warn(f'{path}: decoder warning: {ln}', stacklevel=3)
    if img is None:
        raise DatasetError(f'{path}: unreadable image (not a decodable '
                           'JPEG/PNG/BMP)')
    return img


def read_image(path):
    """Read a BGR uint8 image; raise DatasetError (one line naming the file)
    when it is missing, unreadable, truncated or corrupt (see
    ``decode_image``)."""
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetError(f'{path}: missing image') from None
    except OSError as e:
        raise DatasetError(f'{path}: unreadable image ({e})') from None
    problem = check_image(path, buf.tobytes() if buf.size < 64 else
                          buf[:8].tobytes() + buf[-1024:].tobytes())
    if problem:
        raise DatasetError(f'{path}: {problem}')
    return decode_image(buf, path)


def clip_boxes(boxes, width, height):
    """Clip pixel boxes [n, 4] to the image; return (boxes, keep, n_clipped)
    where keep drops boxes of zero area after clipping."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    c = b.copy()
    c[:, [0, 2]] = c[:, [0, 2]].clip(0, width)
    c[:, [1, 3]] = c[:, [1, 3]].clip(0, height)
    clipped = int((np.abs(c - b) > 1e-6).any(1).sum())
    keep = (c[:, 2] > c[:, 0]) & (c[:, 3] > c[:, 1])
    return c, keep, clipped


class DetectionDataset(data.Dataset):
    """Shared item logic. Subclasses set ``ids``, ``classes``, ``name`` and
    implement ``pull_image(i)``, ``pull_gt(i)`` and ``_file(i)`` (the file
    named in error messages).

    Args:
        transform: callable(img, boxes, labels) -> (img, boxes, labels),
            e.g. SSDAugmentation or BaseTransform.
        channel_order: 'RGB' (ssd.pytorch weights, default) or 'BGR'.
        keep_difficult: keep difficult/crowd objects in training targets.
        skip_bad: instead of raising, skip a bad sample (warn once per file)
            and return the next good one; ``skipped`` counts them.
    """
    name = 'detection'
    classes = ()

    def __init__(self, transform=None, target_transform=None,
                 channel_order='RGB', keep_difficult=False, skip_bad=False):
        if channel_order not in ('RGB', 'BGR'):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got "
                             f"{channel_order!r}")
        self.transform = transform
        self.target_transform = target_transform
        self.channel_order = channel_order
        self.keep_difficult = keep_difficult
        self.skip_bad = skip_bad
        self.skipped = set()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, index):
        im, gt, h, w = self.pull_item(index)
        return im, gt

    def _file(self, index):
        return str(self.ids[index])

    @property
    def source(self):
        """What error messages about the whole set name (its split file,
        annotation file or folder); the dataset's name by default."""
        return getattr(self, '_source', None) or self.name

    @source.setter
    def source(self, value):
        self._source = value

    def load_target(self, index, width, height):
        """Training target [n, 5] float32: normalised boxes + 0-based label.
        Boxes are clipped to the image, zero-area ones dropped, difficult
        objects left out unless keep_difficult."""
        gt = self.pull_gt(index)
        boxes, ok, _ = clip_boxes(gt['boxes'], width, height)
        if not self.keep_difficult:
            ok &= ~gt['difficult']
        boxes = boxes[ok] / np.float32([width, height, width, height])
        target = np.hstack([boxes, gt['labels'][ok, None]])
        return target.astype(np.float32).reshape(-1, 5)

    def pull_item(self, index):
        """(img tensor [3, H, W] float32, target np.float32 [n, 5], h, w)."""
        tried = 0
        while True:
            try:
                return self._pull_item(index)
            except DatasetError as e:
                if not self.skip_bad:
                    raise
                if index not in self.skipped:
                    self.skipped.add(index)
                    warnings.warn(f'skipping bad sample ({len(self.skipped)} '
                                  f'skipped so far): {e}', stacklevel=2)
                tried += 1
                if tried >= len(self):
                    raise DatasetError(f'{self.name}: every sample is bad') \
                        from None
                index = (index + 1) % len(self)

    def _pull_item(self, index):
        try:
            return self._load_item(index)
        except (DatasetError, IndexError):
            raise
        except Exception as e:    # unforeseen bad data: name the file
            raise DatasetError(f'{self._file(index)}: {type(e).__name__}: '
                               f'{e}') from e

    def _load_item(self, index):
        img = self.pull_image(index)
        height, width = img.shape[:2]
        target = self.load_target(index, width, height)
        if self.transform is not None:
            target = np.asarray(target, np.float32).reshape(-1, 5)
            img, boxes, labels = self.transform(img, target[:, :4],
                                                target[:, 4])
            target = np.hstack([np.asarray(boxes, np.float32).reshape(-1, 4),
                                np.asarray(labels, np.float32)[:, None]])
        img = np.asarray(img)
        if self.channel_order == 'RGB':
            img = img[:, :, (2, 1, 0)]
        img = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
        return img.float(), np.asarray(target, np.float32), height, width

    def pull_anno(self, index):
        """[image_id, [[x1, y1, x2, y2, label], ...]] in pixels, every
        object that training would use (difficult ones per keep_difficult)."""
        gt = self.pull_gt(index)
        keep = np.ones(len(gt['labels']), bool) if self.keep_difficult \
            else ~gt['difficult']
        rows = np.hstack([gt['boxes'][keep], gt['labels'][keep, None]])
        return [gt['image_id'], rows.tolist()]

    def pull_tensor(self, index):
        """torch.Tensor [1, H, W, 3] of the BGR image (ssd.pytorch's
        ``torch.Tensor(self.pull_image(index)).unsqueeze_(0)``)."""
        return torch.from_numpy(self.pull_image(index)).float().unsqueeze_(0)

    def __repr__(self):
        return (f'{type(self).__name__}(name={self.name!r}, '
                f'images={len(self)}, classes={len(self.classes)})')


def make_gt(image_id, width, height, boxes=(), labels=(), difficult=()):
    """The pull_gt dict with the contract's dtypes."""
    return dict(image_id=str(image_id), width=int(width), height=int(height),
                boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                labels=np.asarray(labels, np.int64).reshape(-1),
                difficult=np.asarray(difficult, np.bool_).reshape(-1))
