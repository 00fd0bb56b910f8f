"""M-Sec open platform: multi-layered security for hyper-connected smart cities."""

__version__ = "0.1.0"
