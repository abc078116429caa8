"""Classifiers with numpy batch forms (river's API, plus ``*_array`` methods on whole batches)."""

from streamimb.classifiers.features import FeatureIndex
from streamimb.classifiers.hoeffding import NumpyHoeffdingTree

__all__ = ["FeatureIndex", "NumpyHoeffdingTree"]
