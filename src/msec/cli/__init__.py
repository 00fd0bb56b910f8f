"""The ``msec`` command."""
