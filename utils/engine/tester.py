"""What ``test.py`` does, as functions: ssd.pytorch's ``test1.txt`` on the VOC
test set, and drawn pictures / videos + ``detections.json`` for any inputs."""
import json
import os
import sys

import cv2
import numpy as np

IMAGE_EXT = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
VIDEO_EXT = ('.mp4', '.avi', '.mov', '.mkv', '.m4v', '.webm', '.mpg', '.mpeg', '.wmv')


class InputError(ValueError):
    """A missing or unusable input; one line naming it."""


def collect_inputs(paths):
    """Expand --input into (kind, path) pairs, kind 'image' or 'video';
    folders are searched recursively, sorted. Missing paths raise InputError."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            for root, _, files in sorted(os.walk(p)):
                for f in sorted(files):
                    kind = _kind(f)
                    if kind:
                        out.append((kind, os.path.join(root, f)))
        elif os.path.isfile(p):
            out.append((_kind(p) or 'image', p))
        else:
            raise InputError(f'{p}: no such file or folder')
    if not out:
        raise InputError(f'no image or video found in {", ".join(paths)}')
    return out


def _kind(path):
    ext = os.path.splitext(path)[1].lower()
    return 'image' if ext in IMAGE_EXT else 'video' if ext in VIDEO_EXT else None


def _out_path(folder, path, used, suffix=None):
    stem, ext = os.path.splitext(os.path.basename(path))
    ext = suffix or (ext if ext.lower() in IMAGE_EXT else '.jpg')
    name, k = f'{stem}{ext}', 1
    while name in used:
        name, k = f'{stem}_{k}{ext}', k + 1
    used.add(name)
    return os.path.join(folder, name)


def _entry(file, det, names, thresh, frame=None):
    keep = det['scores'] >= thresh
    e = {'file': file}
    if frame is not None:
        e['frame'] = frame
    e.update(boxes=np.round(det['boxes'][keep].astype(np.float64), 2).tolist(),
             labels=det['labels'][keep].tolist(),
             names=[names[k] for k in det['labels'][keep]],
             scores=np.round(det['scores'][keep].astype(np.float64), 4).tolist())
    return e


def _bar(total, desc, unit):
    """The progress bar of --input mode (stderr: count, rate, ETA)."""
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)


def run_images(predictor, items, names, folder, thresh, used, batch_size=8):
    """Detect, draw and write images; returns (json entries, files written)."""
    from data.base import DatasetError, read_image
    from utils.draw import draw_detections
    entries, written = [], []
    if not items:
        return entries, written
    with _bar(len(items), 'images', 'img') as bar:
        for s in range(0, len(items), batch_size):
            chunk = []
            for p in items[s:s + batch_size]:
                try:          # the loaders' reader and decoding policy (data.base)
                    img = read_image(p)
                except DatasetError as e:
                    bar.write(f'test.py: warning: {e}, skipped', file=sys.stderr)
                    continue
                chunk.append((p, img))
            for (p, img), det in zip(chunk, predictor([im for _, im in chunk]) if chunk else []):
                out = _out_path(folder, p, used)
                cv2.imwrite(out, draw_detections(img, det['boxes'], det['labels'],
                                                 det['scores'], names, thresh))
                entries.append(_entry(p, det, names, thresh))
                written.append(out)
            bar.update(len(items[s:s + batch_size]))
    return entries, written


def run_video(predictor, path, names, folder, thresh, used, batch_size=8):
    """Detect and draw every frame of a video into ``<stem>.mp4`` (mp4v)."""
    from utils.draw import draw_detections
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        print(f'test.py: warning: {path}: not a readable video, skipped', file=sys.stderr)
        return [], []
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    out_path, writer, entries, frame = _out_path(folder, path, used, '.mp4'), None, [], 0
    bar = _bar(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None, os.path.basename(path), 'frame')
    try:
        while True:
            frames = []
            while len(frames) < batch_size:
                ok, img = cap.read()
                if not ok:
                    break
                frames.append(img)
            if not frames:
                break
            if writer is None:
                h, w = frames[0].shape[:2]
                writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*'mp4v'), fps, (w, h))
                if not writer.isOpened():
                    raise OSError(f'{out_path}: OpenCV cannot write this video')
            for img, det in zip(frames, predictor(frames)):
                writer.write(draw_detections(img, det['boxes'], det['labels'], det['scores'],
                                             names, thresh))
                entries.append(_entry(path, det, names, thresh, frame))
                frame += 1
            bar.update(len(frames))
    finally:
        bar.close()
        cap.release()
        if writer is not None:
            writer.release()
    if not frame:       # a 0-frame file, or one whose frames do not decode
        print(f'test.py: warning: {path}: no frame could be read (empty or unreadable '
              'video), skipped', file=sys.stderr)
        return [], []
    return entries, [out_path]


def run_inputs(predictor, paths, names, folder, thresh, batch_size=8):
    """--input mode: everything into ``folder`` plus ``folder/detections.json``
    (one entry per image or video frame). Returns the entries."""
    os.makedirs(folder, exist_ok=True)
    items = collect_inputs(paths)
    used, entries, written = {'detections.json'}, [], []
    images = [p for k, p in items if k == 'image']
    e, w = run_images(predictor, images, names, folder, thresh, used, batch_size)
    entries += e
    written += w
    for p in (p for k, p in items if k == 'video'):
        e, w = run_video(predictor, p, names, folder, thresh, used, batch_size)
        entries += e
        written += w
    if not entries:
        raise InputError('no input could be read')
    with open(os.path.join(folder, 'detections.json'), 'wt') as f:
        json.dump(entries, f)
    print(f'{len(entries)} images/frames, {len(written)} files written to {folder} '
          f'(+ detections.json)')
    return entries


def write_test1(predictor, dataset, names, folder, thresh, batch_size=8):
    """ssd.pytorch's test.py job: ``folder/test1.txt`` with, for every image,
    its ground truth and the predictions scoring >= ``thresh``, in
    ssd.pytorch's text format. Returns the path."""
    from tqdm import tqdm
    os.makedirs(folder, exist_ok=True)
    filename = os.path.join(folder, 'test1.txt')
    with open(filename, 'wt') as f:
        for s in tqdm(range(0, len(dataset), batch_size), desc='Testing', unit='batch'):
            idx = range(s, min(s + batch_size, len(dataset)))
            dets = predictor([dataset.pull_image(i) for i in idx])
            for i, det in zip(idx, dets):
                img_id, annotation = dataset.pull_anno(i)
                f.write('\nGROUND TRUTH FOR: ' + str(img_id) + '\n')
                for box in annotation:
                    f.write('label: ' + ' || '.join(str(float(b)) for b in box[:4])
                            + ' || ' + str(int(box[4])) + '\n')
                order = np.lexsort((-det['scores'], det['labels']))   # class, then score
                pred_num = 0
                for k in order:
                    if det['scores'][k] < thresh:
                        continue
                    if pred_num == 0:
                        f.write('PREDICTIONS: ' + '\n')
                    pred_num += 1
                    coords = (str(np.float32(c)) for c in det['boxes'][k])
                    f.write(str(pred_num) + ' label: ' + names[det['labels'][k]] + ' score: '
                            + str(float(det['scores'][k])) + ' ' + ' || '.join(coords) + '\n')
    return filename
