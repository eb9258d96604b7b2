"""liverec: self-hosted real-time session recommendations over WebSocket."""

__version__ = "0.1.0"
