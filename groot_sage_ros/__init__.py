"""groot_sage_ros: GR00T backbone features on ROS 2, and a SAGE student distilled from them.

The core (api, engine, families, fastpath, checkpoint, student, serving) imports no ROS package.
"""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy so that ``import groot_sage_ros`` stays cheap (no torch import) for tools that only need metadata.
    if name in ("TeacherEngine", "load_engine"):
        from . import engine

        return getattr(engine, name)
    raise AttributeError(name)
