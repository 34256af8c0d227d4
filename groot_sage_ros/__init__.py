"""groot_sage_ros: GR00T N1.5 backbone features on ROS 2, and a SAGE student distilled from them.

The core (config, checkpoint, tokenizer, processor, model, engine) imports no ROS package.
"""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy so that ``import groot_sage_ros`` stays cheap (no torch import) for tools that only need metadata.
    if name == "FeatureExtractor":
        from .engine import FeatureExtractor

        return FeatureExtractor
    raise AttributeError(name)
