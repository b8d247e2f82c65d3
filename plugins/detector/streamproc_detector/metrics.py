"""Detection quality: COCO-style average precision per class, mAP@0.5 and mAP@0.5:0.95.

For one IoU threshold and one class, each image's detections are matched greedily (by
score, descending) to the unmatched ground-truth box of that class with the highest IoU
at or above the threshold. Over all images, detections sorted by score give the
precision-recall curve; precision is made monotone and integrated at 101 recall points
(COCO). mAP averages the classes that have ground truth. Matching depends on one image
only, so ``MatchTable`` matches once and then scores any weighting of the images
(a bootstrap resample is a vector of image multiplicities).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from streamproc_detector.boxes import iou_matrix

COCO_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
RECALL_POINTS = np.linspace(0, 1, 101)


@dataclass(frozen=True)
class ImageDetections:
    """Predicted boxes (K, 4), scores (K,), labels (K,) and ground truth (G, 4), (G,) of one image."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    true_boxes: np.ndarray
    true_labels: np.ndarray


def match_image(image: ImageDetections, label: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(scores, hit flags) of the image's ``label`` detections at IoU ``threshold``."""
    predicted = image.labels == label
    boxes, scores = image.boxes[predicted], image.scores[predicted]
    truth = image.true_boxes[image.true_labels == label]
    hits = np.zeros(len(boxes), dtype=bool)
    if len(boxes) and len(truth):
        overlaps = iou_matrix(torch.from_numpy(boxes).float(), torch.from_numpy(truth).float()).numpy()
        used = np.zeros(len(truth), dtype=bool)
        for index in np.argsort(-scores, kind="stable"):
            candidates = np.where(used, -1.0, overlaps[index])
            best = int(np.argmax(candidates))
            if candidates[best] >= threshold:
                used[best] = hits[index] = True
    return scores, hits


class MatchTable:
    """Matches of every image, class and threshold, computed once."""

    def __init__(self, images: Sequence[ImageDetections], thresholds: Sequence[float], classes: int) -> None:
        self.images = len(images)
        self.thresholds = tuple(thresholds)
        self.truth = np.array([[int((im.true_labels == c).sum()) for c in range(classes)] for im in images])
        self.curves: dict[tuple[int, float], tuple[np.ndarray, np.ndarray]] = {}
        for label in range(classes):
            for threshold in self.thresholds:
                scores, hits, owners = [], [], []
                for n, image in enumerate(images):
                    s, h = match_image(image, label, threshold)
                    scores.append(s)
                    hits.append(h)
                    owners.append(np.full(len(s), n))
                order = np.argsort(-np.concatenate(scores), kind="stable")
                self.curves[label, threshold] = (np.concatenate(hits)[order], np.concatenate(owners)[order])

    def average_precision(self, label: int, threshold: float, weights: np.ndarray) -> float | None:
        """AP with each image counted ``weights[n]`` times; ``None`` without ground truth."""
        total = float((self.truth[:, label] * weights).sum())
        if total == 0:
            return None
        hits, owners = self.curves[label, threshold]
        if not len(hits):
            return 0.0
        w = weights[owners].astype(np.float64)
        true_positives = np.cumsum(hits * w)
        detections = np.cumsum(w)
        valid = w > 0
        precision = true_positives[valid] / detections[valid]
        recall = true_positives[valid] / total
        if not len(precision):
            return 0.0
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        positions = np.searchsorted(recall, RECALL_POINTS, side="left")
        return float(
            np.mean(np.where(positions < len(precision), precision[np.minimum(positions, len(precision) - 1)], 0))
        )

    def mean_average_precision(self, thresholds: Sequence[float], weights: np.ndarray | None = None) -> float:
        """Mean over ``thresholds`` of the mean AP over classes with ground truth."""
        w = np.ones(self.images) if weights is None else weights
        per_threshold = []
        for threshold in thresholds:
            aps = [self.average_precision(c, threshold, w) for c in range(self.truth.shape[1])]
            per_threshold.append(np.mean([ap for ap in aps if ap is not None]))
        return float(np.mean(per_threshold))
