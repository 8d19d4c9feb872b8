"""Evaluation room: the VOC metrics (``voc``), the COCO metric (``coco``),
detection and ground-truth containers and the devkit files (``detections``),
PR curves (``pr_curves``), and ``evaluate`` which runs a network over a
dataset and applies them (``evaluate_model``)."""
