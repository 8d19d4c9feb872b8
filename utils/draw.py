"""Drawing detections on images (OpenCV, no display needed)."""
import cv2
import numpy as np

# A fixed palette (BGR), one colour per class, cycled.
PALETTE = np.array([
    (75, 25, 230), (75, 180, 60), (25, 225, 255), (200, 130, 0), (48, 130, 245),
    (180, 30, 145), (240, 240, 70), (230, 50, 240), (60, 245, 210), (212, 190, 250),
    (128, 128, 0), (255, 190, 220), (40, 110, 170), (200, 250, 255), (0, 0, 128),
    (195, 255, 170), (0, 128, 128), (180, 215, 255), (128, 0, 0), (128, 128, 128),
], dtype=np.uint8)


def class_color(label):
    """BGR colour tuple for a 0-based class index."""
    return tuple(int(v) for v in PALETTE[int(label) % len(PALETTE)])


def draw_detections(img_bgr, boxes_px, labels, scores, class_names, thresh=0.0,
                    thickness=None):
    """Draw boxes, class names and scores on a copy of ``img_bgr``.

    Args:
        img_bgr: uint8 ``[H, W, 3]`` BGR image.
        boxes_px: ``[n, 4]`` (x1, y1, x2, y2) in pixels of that image.
        labels: ``[n]`` 0-based class indices (no background).
        scores: ``[n]`` in [0, 1]; boxes with score < ``thresh`` are skipped.
        class_names: sequence of names indexed by label.
    Returns:
        uint8 ``[H, W, 3]`` BGR image (the input is not modified).
    """
    out = np.ascontiguousarray(img_bgr, dtype=np.uint8).copy()
    h, w = out.shape[:2]
    boxes = np.asarray(boxes_px, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    t = thickness or max(1, round(min(h, w) / 250))
    font_scale = max(0.35, min(h, w) / 800)
    for i in np.argsort(scores):                    # best boxes drawn last, on top
        if scores[i] < thresh:
            continue
        x1, y1, x2, y2 = np.clip(np.round(boxes[i]), [0, 0, 0, 0],
                                 [w - 1, h - 1, w - 1, h - 1]).astype(int)
        color = class_color(labels[i])
        cv2.rectangle(out, (x1, y1), (x2, y2), color, t, cv2.LINE_AA)
        name = class_names[int(labels[i])] if 0 <= int(labels[i]) < len(class_names) \
            else str(int(labels[i]))
        text = f'{name}: {scores[i]:.2f}'
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        ty = y1 - 2 if y1 - th - base - 2 >= 0 else min(y1 + th + base + 2, h - 1)
        cv2.rectangle(out, (x1, ty - th - base), (min(x1 + tw + 2, w - 1), ty + base // 2),
                      color, -1)
        dark = sum(color) > 382
        cv2.putText(out, text, (x1 + 1, ty - base // 2), cv2.FONT_HERSHEY_SIMPLEX,
                    font_scale, (0, 0, 0) if dark else (255, 255, 255), 1, cv2.LINE_AA)
    return out
