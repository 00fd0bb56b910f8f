"""Test support shared by the test suite, the apps' tests and the benchmark.

Real-service launchers (PostgreSQL, Mosquitto) live in :mod:`msec.testing.services`; import
them from there so that importing this package stays cheap.
"""
