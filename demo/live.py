"""Live detection on a webcam or a video file, as ssd.pytorch's ``demo/live.py``.

    python -m demo.live                                  # webcam 0, window, FPS
    python demo/live.py                                  # the same (ssd.pytorch's command)
    python -m demo.live --weights weights/ssd300_mAP_77.43_v2.pth --source clip.mp4 \\
        --output out.mp4 --no_display                     # headless, writes the drawn video
    python -m demo.live --onnx ssd300_int8.onnx --source clip.mp4   # an exported file (or .xml)

The model (SSD300, SSD512, the shapes preset; the classes) and its channel
order are taken from the weight file (``utils.weights.build_from_weights``);
``--size``, ``--dataset`` and ``--channel_order`` override. It runs on CUDA
when present (``--cuda False`` forces the CPU), like the other scripts. Capture runs in a
thread (no imutils). ``q`` or Esc in the window, Ctrl-C or SIGTERM stop
cleanly: the output video is finalised and the camera released; ``p`` pauses.
"""
import argparse
import os
import queue
import signal
import sys
import threading
import time

import cv2

if __package__ in (None, ''):     # `python demo/live.py` (ssd.pytorch's command) from the root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.engine.cli import (add_cuda_flag, add_dataset_flag, add_detect_flags,  # noqa: E402
                              add_source_flag, add_weights_flag, run_script, size_flag)

_END = object()
DEFAULT_WEIGHTS = ('weights/ssd300_mAP_77.43_v2.pth', 'weights/ssd_300_VOC0712.pth')


class ThreadedCapture:
    """Reads frames from ``cv2.VideoCapture(source)`` in a background thread.

    A camera (``source`` is an int) keeps only the newest frame, so that a slow
    model shows the present, not a backlog. A file keeps every frame (a
    bounded queue; the reader waits), so that ``--output`` has as many frames
    as the input. ``read()`` returns a BGR uint8 ``[H, W, 3]`` frame, or None
    at the end of the stream.
    """

    def __init__(self, source, queue_size=8):
        self.is_camera = isinstance(source, int)
        self.cap = cv2.VideoCapture(source)
        if not self.cap.isOpened():
            kind = 'camera' if self.is_camera else 'video file'
            raise OSError(f'--source {source}: cannot open this {kind}')
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 1 <= fps <= 240 else 30.0
        count = 0 if self.is_camera else int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frames = count if count > 0 else None      # None: unknown (camera, stream)
        self.queue = queue.Queue(maxsize=1 if self.is_camera else queue_size)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _put(self, item):
        while not self.stopped.is_set():
            if self.is_camera and item is not _END:
                try:                          # drop the stale frame
                    self.queue.get_nowait()
                except queue.Empty:
                    pass
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _run(self):
        while not self.stopped.is_set():
            ok, frame = self.cap.read()
            if not ok:
                break
            self._put(frame)
        self._put(_END)

    def read(self):
        while True:
            try:
                item = self.queue.get(timeout=0.1)
            except queue.Empty:
                if self.stopped.is_set() or not self.thread.is_alive() and self.queue.empty():
                    return None
                continue
            return None if item is _END else item

    def release(self):
        self.stopped.set()
        self.thread.join(timeout=2)
        if not self.thread.is_alive():     # never release under a blocked read()
            self.cap.release()


def open_writer(path, fps, frame):
    """A ``cv2.VideoWriter`` for ``frame``'s size: mp4v for .mp4/.mov/.m4v,
    MJPG otherwise (.avi)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    ext = os.path.splitext(path)[1].lower()
    fourcc = cv2.VideoWriter_fourcc(*('mp4v' if ext in ('.mp4', '.mov', '.m4v') else 'MJPG'))
    h, w = frame.shape[:2]
    writer = cv2.VideoWriter(path, fourcc, fps, (w, h))
    if not writer.isOpened():
        raise OSError(f'--output {path}: OpenCV cannot write this video format')
    return writer


def draw_fps(img, fps):
    cv2.putText(img, f'FPS: {fps:.1f}', (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, f'FPS: {fps:.1f}', (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                (255, 255, 255), 1, cv2.LINE_AA)
    return img


def run(predictor, classes, capture, thresh=0.6, output=None, display=True, max_frames=None,
        progress=False):
    """Detect on every frame of ``capture``, draw, show and/or write; with
    ``progress``, a progress bar on stderr (count, rate, ETA when the frame
    count is known).

    Returns the number of frames processed (= written when ``output``)."""
    from tqdm import tqdm
    from utils.draw import draw_detections
    writer, n, fps, t_last = None, 0, 0.0, time.perf_counter()
    total = getattr(capture, 'frames', None)
    if max_frames is not None:
        total = min(total, max_frames) if total else max_frames
    bar = tqdm(total=total, unit='frame', desc='demo.live', file=sys.stderr,
               dynamic_ncols=True, disable=not progress)
    try:
        while max_frames is None or n < max_frames:
            frame = capture.read()
            if frame is None:
                break
            det = predictor([frame])[0]
            out = draw_detections(frame, det['boxes'], det['labels'], det['scores'],
                                  classes, thresh=thresh)
            now = time.perf_counter()
            fps = 0.9 * fps + 0.1 / max(now - t_last, 1e-6) if n else 1 / max(now - t_last, 1e-6)
            t_last = now
            draw_fps(out, fps)
            if output:
                writer = writer or open_writer(output, capture.fps, out)
                writer.write(out)
            n += 1
            bar.update(1)
            if display:
                cv2.imshow('SSD (q to quit, p to pause)', out)
                key = cv2.waitKey(1) & 0xFF
                if key == ord('p'):          # pause until p again (q/Esc quit)
                    key = 0
                    while key not in (ord('p'), ord('q'), 27):
                        key = cv2.waitKey(50) & 0xFF
                if key in (ord('q'), 27):
                    break
    except KeyboardInterrupt:
        print('\ninterrupted', file=sys.stderr)
    finally:
        bar.close()
        if writer is not None:
            writer.release()
        if display:
            cv2.destroyAllWindows()
    return n


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Live SSD detection on a webcam or a video file.')
    add_weights_flag(p, '--weights', None,
                     'trained weights: ssd.pytorch files, our snapshots or checkpoints '
                     f'(default: the first of {", ".join(DEFAULT_WEIGHTS)} present)')
    p.add_argument('--onnx', default=None, metavar='FILE',
                   help='run this exported file (python -m utils.export: .onnx, or an OpenVINO '
                        '.xml) instead of --weights; its size and classes are in the file')
    p.add_argument('--backend', default=None, choices=('onnxruntime', 'openvino'),
                   help='what runs --onnx (default: openvino for .xml, else onnxruntime)')
    add_source_flag(p, '--source', default='0', help='camera index (default 0) or video file')
    p.add_argument('--output', default=None, help='write the drawn video here (.mp4 or .avi)')
    p.add_argument('--no_display', action='store_true', help='no window (headless machines)')
    p.add_argument('--size', type=size_flag, default=None,
                   help='override the input size inferred from the weights')
    add_dataset_flag(p, help='override the model/classes inferred from the weights')
    p.add_argument('--channel_order', default=None, choices=('RGB', 'BGR'),
                   help='override the channel order known for the weights')
    add_detect_flags(p, '--thresh', 0.6, 'score threshold for detection and drawing')
    add_cuda_flag(p)
    p.add_argument('--max_frames', type=int, default=None, help='stop after this many frames')
    return p.parse_args(argv)


def main(argv=None):
    """``python -m demo.live ARGV``; returns the exit code (1: one-line
    error, 130: Ctrl-C while loading)."""
    args = parse_args(argv)
    return run_script('demo.live', _main, args)


def _main(args):
    from utils.engine.cli import select_device
    device = select_device(args.cuda, args.device)
    if args.weights is None and not args.onnx:
        args.weights = next((w for w in DEFAULT_WEIGHTS if os.path.isfile(w)), None)
        if args.weights is None:
            raise OSError(f'no weights given and none of {", ".join(DEFAULT_WEIGHTS)} '
                          'present: pass --weights (see weights/README.md)')
    from utils.inference import Predictor
    from utils.weights import build_from_weights
    source = int(args.source) if args.source.isdigit() else args.source
    if isinstance(source, str) and not os.path.exists(source) and '://' not in source:
        raise OSError(f'--source {source}: no such file')
    if args.onnx:         # an exported file (utils.export), onnxruntime or OpenVINO
        from utils.export import open_exported
        predictor = open_exported(args.onnx, args.backend, channel_order=args.channel_order,
                                  conf_thresh=args.thresh)
        classes, order, device = predictor.classes, predictor.channel_order, 'cpu'
        what = f'{args.onnx}: {predictor.backend}, SSD{predictor.size}'
    else:
        net, classes, order = build_from_weights(args.weights, 'test', size=args.size,
                                                 dataset=args.dataset,
                                                 channel_order=args.channel_order,
                                                 device=device, conf_thresh=args.thresh,
                                                 top_k=args.top_k, nms_thresh=args.nms_thresh)
        predictor = Predictor(net, net.size, device=device, channel_order=order,
                              conf_thresh=args.thresh)
        what = f'{args.weights}: {net.cfg["name"]} at {net.size}'
    try:
        capture = ThreadedCapture(source)
    except OSError:
        if isinstance(source, int):
            raise
        print(f'demo.live: warning: {source}: cannot open this video file (unreadable '
              'or not a video)' + ('; nothing written' if args.output else ''),
              file=sys.stderr)
        return 1
    display = not args.no_display
    if display and sys.platform.startswith('linux') and not (
            os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY')):
        print('warning: no display found; running as with --no_display', file=sys.stderr)
        display = False
    print(f'{what}, {len(classes)} classes, {order} input; source {source} on '
          f'{getattr(device, "type", device)}')
    old = signal.signal(signal.SIGTERM, signal.default_int_handler)
    t0 = time.perf_counter()
    try:
        n = run(predictor, classes, capture, args.thresh, args.output,
                display=display, max_frames=args.max_frames, progress=not display)
    finally:
        capture.release()
        signal.signal(signal.SIGTERM, old)
    dt = time.perf_counter() - t0
    if n == 0:
        print(f'demo.live: warning: {source}: no frame could be read (empty or unreadable '
              'video)' + ('; nothing written' if args.output else ''), file=sys.stderr)
        return 1
    print(f'{n} frames in {dt:.1f} s, approx. FPS {n / max(dt, 1e-9):.2f}'
          + (f'; written to {args.output}' if args.output else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
