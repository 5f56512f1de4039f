"""Readers that decode a data set once into a uint8 ImageSet, and the embedded demo data."""
from .demo import demo_splits, make_demo_images
from .imageset import ImageSet
from .readers import detect_layout, load_images
from .signals import load_signals
from .signalset import SignalSet

from . import hf_datasets, shards  # noqa: F401 -- their readers register themselves (registry.register)

__all__ = ["ImageSet", "SignalSet", "load_signals", "load_images", "detect_layout", "make_demo_images", "demo_splits"]
