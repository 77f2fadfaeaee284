"""A user-supplied detector for `dora-data analyze --detector tests.plugin_detector:make` (the plug-in
interface an open-vocabulary detector such as Detic would use): labels bright and dark frames."""

from __future__ import annotations

import numpy as np


class BrightnessLabeller:
    name = "test plug-in (bright/dark)"
    classes = None  # open vocabulary

    def __init__(self, threshold: float):
        self.threshold = threshold

    def __call__(self, rgb: np.ndarray) -> list[str]:
        return ["bright thing"] if rgb.mean() > 110 else ["dark thing", "shadow"]


def make(threshold: float) -> BrightnessLabeller:
    return BrightnessLabeller(threshold)
