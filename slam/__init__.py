"""slam: real-time visual SLAM with learned features."""

__version__ = "0.1.0"
