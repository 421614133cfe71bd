"""deepscan: batch scanning of images and videos for manipulated (deepfake) faces.

`scanner` holds the producer side and the shared core: settings, the verdict database,
sources, the detector model and its checkpoint format. It never imports `workers` or
`training`; the CLI in `deepscan.cli` is the one face that imports everything.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("deepscan")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
