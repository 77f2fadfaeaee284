"""`dora-data analyze`: the paper's dataset analysis (section 3.3, Figure 2): measures, detectors, report."""

from pipeline.analyze.detectors import NAMES, DetectorOptions, threshold_for
from pipeline.analyze.inputs import resolve
from pipeline.analyze.report import write_csvs, write_examples, write_figures, write_json
from pipeline.analyze.run import AnalyzeSettings, analyze, get_detector

__all__ = [
    "DetectorOptions", "NAMES", "threshold_for", "resolve", "write_csvs", "write_examples", "write_figures",
    "write_json", "AnalyzeSettings", "analyze", "get_detector",
]
